//! The texts of code messages: `TESSERA_SMS_TEMPLATE` for text messages and
//! `TESSERA_EMAIL_TEMPLATE_DIR` (`subject.txt`, `body.txt`) for e-mail, with the placeholders
//! `{code}`, `{minutes}` and `{issuer}`. Templates are checked once, at start: an unknown
//! placeholder, a body without `{code}`, or a subject with `{code}` (subjects show in
//! notifications and mail lists, and are kept by relays in plain text) is refused there.

use std::path::Path;

use tessera_domain::secret::Secret;

use crate::delivery::DeliveryConfigError;

/// The built-in text-message and e-mail body.
pub const DEFAULT_BODY: &str =
    "Your {issuer} code is {code}. It expires in {minutes} minutes. Do not share it.";

/// The built-in e-mail subject.
pub const DEFAULT_SUBJECT: &str = "Your {issuer} code";

const PLACEHOLDERS: [&str; 3] = ["code", "minutes", "issuer"];

/// The checked templates and the issuer they name.
#[derive(Clone, Debug)]
pub struct Templates {
    sms: String,
    email_subject: String,
    email_body: String,
    issuer: String,
}

/// What a template's text is checked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Body,
    Subject,
}

fn check(name: &str, text: &str, role: Role) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("{name}: a '{{' without '}}'"))?;
        let placeholder = &after[..close];
        if !PLACEHOLDERS.contains(&placeholder) {
            return Err(format!(
                "{name}: unknown placeholder {{{placeholder}}} (known: {{code}}, {{minutes}}, {{issuer}})"
            ));
        }
        rest = &after[close + 1..];
    }
    match role {
        Role::Subject if text.contains("{code}") => Err(format!(
            "{name} must not hold {{code}}: a code never goes in an e-mail subject"
        )),
        Role::Body if !text.contains("{code}") => Err(format!("{name} must hold {{code}}")),
        _ if text.trim().is_empty() => Err(format!("{name} is empty")),
        _ => Ok(()),
    }
}

fn read(dir: &Path, file: &str) -> Result<Option<String>, DeliveryConfigError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DeliveryConfigError::Template(format!(
            "{}: {e}",
            path.display()
        ))),
    }
}

impl Templates {
    /// The built-in texts, or those of `sms` and of `email_dir` (`subject.txt` and `body.txt`;
    /// a missing file keeps the built-in text), naming `issuer`.
    ///
    /// # Errors
    /// An unreadable template, an unknown placeholder, a body without `{code}`, a subject with
    /// `{code}`.
    pub fn load(
        sms: Option<&str>,
        email_dir: Option<&Path>,
        issuer: &str,
    ) -> Result<Self, DeliveryConfigError> {
        let sms = sms.unwrap_or(DEFAULT_BODY).to_string();
        check("TESSERA_SMS_TEMPLATE", &sms, Role::Body).map_err(DeliveryConfigError::Template)?;
        let (mut email_subject, mut email_body) =
            (DEFAULT_SUBJECT.to_string(), DEFAULT_BODY.to_string());
        if let Some(dir) = email_dir {
            if !dir.is_dir() {
                return Err(DeliveryConfigError::Template(format!(
                    "TESSERA_EMAIL_TEMPLATE_DIR {} is not a directory",
                    dir.display()
                )));
            }
            // A subject is one header line.
            if let Some(subject) = read(dir, "subject.txt")? {
                email_subject = subject.trim().to_string();
                if email_subject.contains(['\r', '\n']) {
                    return Err(DeliveryConfigError::Template(format!(
                        "{}: a subject is one line",
                        dir.join("subject.txt").display()
                    )));
                }
            }
            if let Some(body) = read(dir, "body.txt")? {
                email_body = body;
            }
            check(
                &dir.join("subject.txt").display().to_string(),
                &email_subject,
                Role::Subject,
            )
            .map_err(DeliveryConfigError::Template)?;
            check(
                &dir.join("body.txt").display().to_string(),
                &email_body,
                Role::Body,
            )
            .map_err(DeliveryConfigError::Template)?;
        }
        Ok(Self {
            sms,
            email_subject,
            email_body,
            issuer: issuer.to_string(),
        })
    }

    fn fill(&self, template: &str, code: &str, minutes: i64) -> String {
        // One pass, so a placeholder inside a substituted value (an issuer named "{code}")
        // stays as it is.
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            match &after[..close] {
                "code" => out.push_str(code),
                "minutes" => out.push_str(&minutes.to_string()),
                "issuer" => out.push_str(&self.issuer),
                other => {
                    out.push('{');
                    out.push_str(other);
                    out.push('}');
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A text message's body.
    pub fn sms(&self, code: &str, minutes: i64) -> Secret<String> {
        Secret::new(self.fill(&self.sms, code, minutes))
    }

    /// An e-mail's subject (checked at load to hold no code) and body.
    pub fn email(&self, code: &str, minutes: i64) -> (String, Secret<String>) {
        (
            self.fill(&self.email_subject, "", minutes),
            Secret::new(self.fill(&self.email_body, code, minutes)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tpl_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn the_defaults_name_the_issuer_code_and_minutes() {
        let t = Templates::load(None, None, "Acme").unwrap();
        assert_eq!(
            t.sms("123456", 5).expose(),
            "Your Acme code is 123456. It expires in 5 minutes. Do not share it."
        );
        let (subject, body) = t.email("123456", 5);
        assert_eq!(subject, "Your Acme code");
        assert!(body.expose().contains("123456"));
    }

    #[test]
    fn placeholders_are_filled_once_and_only_known_ones_are_accepted() {
        let t = Templates::load(Some("{issuer}: {code} ({minutes} min)"), None, "{code}").unwrap();
        assert_eq!(t.sms("042042", 3).expose(), "{code}: 042042 (3 min)");
        for (bad, says) in [
            ("{code} {user}", "unknown placeholder {user}"),
            ("{code} {oops", "without"),
            ("no code here", "must hold {code}"),
        ] {
            let e = Templates::load(Some(bad), None, "x")
                .unwrap_err()
                .to_string();
            assert!(e.contains("TESSERA_SMS_TEMPLATE"), "{e}");
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn an_email_directory_replaces_subject_and_body_and_refuses_a_code_in_the_subject() {
        let dir = dir_with(&[
            ("subject.txt", "{issuer} sign-in ({minutes} min)\n"),
            ("body.txt", "Code: {code}\n"),
        ]);
        let t = Templates::load(None, Some(&dir), "Acme").unwrap();
        let (subject, body) = t.email("314159", 10);
        assert_eq!(subject, "Acme sign-in (10 min)");
        assert_eq!(body.expose(), "Code: 314159\n");

        let dir = dir_with(&[("subject.txt", "Your code {code}")]);
        let e = Templates::load(None, Some(&dir), "Acme")
            .unwrap_err()
            .to_string();
        assert!(e.contains("subject.txt must not hold {code}"), "{e}");

        let e = Templates::load(None, Some(&dir.join("missing")), "Acme")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}
