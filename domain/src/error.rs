//! The classification every domain error maps to; the API turns kinds into GraphQL codes.

/// What kind of failure a rejected command is. The API maps each kind to one
/// `extensions.code`; nothing else decides codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or out of range (`BAD_USER_INPUT`).
    InvalidInput,
    /// The aggregate does not exist (`NOT_FOUND`).
    NotFound,
    /// The aggregate exists but is in a state where the command makes no sense (`CONFLICT`).
    WrongState,
    /// A limit on how often something may happen was hit (`RATE_LIMITED`).
    RateLimited,
}

/// Implemented by every domain error.
pub trait Classify {
    /// The kind of failure.
    fn kind(&self) -> ErrorKind;
    /// A stable SCREAMING_SNAKE name of the variant, for `extensions.reason`.
    fn reason(&self) -> &'static str;
    /// For a [`ErrorKind::RateLimited`] rejection: whole seconds until a retry can succeed.
    fn retry_after_seconds(&self) -> Option<i64> {
        None
    }
}
