use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::{Aggregate, event_sink::EventSink};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::{hash_password, verify_password},
    ids::normalize_login,
    services::Clock,
    user::{
        LoginFailed, LoginFailureReason, PasswordSet, Register, Registered, SetPassword,
        UserCommand, UserError, UserEvent,
    },
};

/// Whether a user may use Tessera.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserStatus {
    /// Not registered (the default state of an empty stream).
    #[default]
    Unregistered,
    /// Registered and active.
    Active,
}

/// A user, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Lifecycle state.
    pub status: UserStatus,
    /// Normalised login.
    pub login: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number (E.164).
    pub phone_number: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// argon2id hash of the password, if one was set.
    pub password_hash: Option<String>,
    /// When the user registered.
    pub created_at: Option<DateTime<Utc>>,
    /// Failed logins so far.
    #[serde(default)]
    pub failed_logins: u32,
}

/// What a user's commands need from outside.
#[derive(Clone, Debug)]
pub struct UserServices {
    /// The clock.
    pub clock: Arc<dyn Clock>,
}

impl User {
    /// Whether the stream holds a registered user.
    pub fn exists(&self) -> bool {
        self.status != UserStatus::Unregistered
    }
}

impl Aggregate for User {
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = UserServices;

    async fn handle(
        &mut self,
        command: UserCommand,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        match command {
            UserCommand::Register(cmd) => self.register(cmd, services, sink).await,
            UserCommand::SetPassword(cmd) => self.set_password(cmd, services, sink).await,
            UserCommand::RecordLoginFailure { reason } => {
                if !self.exists() {
                    return Err(UserError::NotFound);
                }
                self.record_login_failure(reason, services, sink).await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::Registered(e) => {
                self.status = UserStatus::Active;
                self.login = e.login;
                self.email = e.email;
                self.phone_number = e.phone_number;
                self.display_name = e.display_name;
                self.created_at = Some(e.at);
            }
            UserEvent::PasswordSet(e) => self.password_hash = Some(e.password_hash),
            UserEvent::LoginFailed(e) => self.failed_logins = e.failed_logins,
        }
    }
}

impl User {
    async fn register(
        &mut self,
        cmd: Register,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if self.exists() {
            return Err(UserError::AlreadyRegistered);
        }
        cmd.validate()?;
        let at = services.clock.now();
        let registered = Registered {
            login: normalize_login(&cmd.login),
            email: cmd.email,
            phone_number: cmd.phone_number,
            display_name: cmd.display_name,
            at,
        };
        sink.write(UserEvent::Registered(registered), self).await;
        if let Some(password) = cmd.password {
            let password_hash = hash_password(password.expose());
            sink.write(
                UserEvent::PasswordSet(PasswordSet { password_hash, at }),
                self,
            )
            .await;
        }
        Ok(())
    }
}

impl User {
    async fn set_password(
        &mut self,
        cmd: SetPassword,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        if !self.exists() {
            return Err(UserError::NotFound);
        }
        cmd.validate()?;
        if let Some(current) = &cmd.current_password {
            let matches = self
                .password_hash
                .as_deref()
                .is_some_and(|phc| verify_password(current.expose(), phc));
            if !matches {
                let reason = if self.password_hash.is_some() {
                    LoginFailureReason::WrongPassword
                } else {
                    LoginFailureReason::NoPassword
                };
                self.record_login_failure(reason, services, sink).await;
                return Ok(());
            }
        }
        let set = PasswordSet {
            password_hash: hash_password(cmd.password.expose()),
            at: services.clock.now(),
        };
        sink.write(UserEvent::PasswordSet(set), self).await;
        Ok(())
    }

    async fn record_login_failure(
        &mut self,
        reason: LoginFailureReason,
        services: &UserServices,
        sink: &EventSink<Self>,
    ) {
        let failed = LoginFailed {
            reason,
            failed_logins: self.failed_logins.saturating_add(1),
            at: services.clock.now(),
        };
        sink.write(UserEvent::LoginFailed(failed), self).await;
    }
}
