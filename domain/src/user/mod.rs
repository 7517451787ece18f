//! The `User` aggregate: registration and profile. Recovery codes and passwords live here too.

mod aggregate;
mod commands;
mod error;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{User, UserServices, UserStatus};
pub use commands::{
    LoginFailureReason, Register, SetPassword, UserCommand, validate_email, validate_phone_number,
};
pub use error::UserError;
pub use events::{LoginFailed, PasswordSet, Registered, UserEvent};
