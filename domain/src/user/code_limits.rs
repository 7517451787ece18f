//! SMS pumping (toll fraud) limits, the parts that are rules: why a one-time code was
//! refused before anything was sent, and when the hourly SMS budget of all nodes is nearly
//! spent. The counters themselves are fixed windows in the store, shared by every node.

use serde::{Deserialize, Serialize};

/// Why a code was refused before it was sent. The serialised names are the error reasons a
/// caller gets with `RATE_LIMITED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CodeRefusalReason {
    /// The number's country calling code is not in `TESSERA_SMS_ALLOWED_COUNTRIES`.
    #[serde(rename = "SMS_COUNTRY_NOT_ALLOWED")]
    CountryNotAllowed,
    /// This destination got a code moments ago (whichever factor or user asked).
    #[serde(rename = "DESTINATION_RESEND_TOO_SOON")]
    DestinationResendTooSoon,
    /// This destination got its codes for the hour.
    #[serde(rename = "DESTINATION_LIMIT_REACHED")]
    DestinationLimitReached,
    /// This user got their text messages for the day.
    #[serde(rename = "SMS_USER_DAILY_LIMIT")]
    UserDailyLimit,
    /// The hourly budget of text messages of all nodes is spent.
    #[serde(rename = "SMS_BUDGET_EXHAUSTED")]
    BudgetExhausted,
}

impl CodeRefusalReason {
    /// The error reason (`SMS_COUNTRY_NOT_ALLOWED`, …), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CountryNotAllowed => "SMS_COUNTRY_NOT_ALLOWED",
            Self::DestinationResendTooSoon => "DESTINATION_RESEND_TOO_SOON",
            Self::DestinationLimitReached => "DESTINATION_LIMIT_REACHED",
            Self::UserDailyLimit => "SMS_USER_DAILY_LIMIT",
            Self::BudgetExhausted => "SMS_BUDGET_EXHAUSTED",
        }
    }
}

/// The count of the hourly window at which the budget is 80% spent (rounded up, at least 1).
pub fn budget_warning_mark(budget: i64) -> i64 {
    ((budget.max(1) * 4 + 4) / 5).max(1)
}

/// Whether the SMS that made the window's count `sent` is the one that crosses 80% of
/// `budget`. Counts rise one at a time and atomically across nodes, so exactly one SMS per
/// window answers yes: the warning is raised once per window without any other bookkeeping.
pub fn crosses_budget_warning(sent: i64, budget: i64) -> bool {
    sent == budget_warning_mark(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warning_is_crossed_once_at_eighty_percent_rounded_up() {
        for (budget, mark) in [(1000, 800), (5, 4), (10, 8), (3, 3), (1, 1), (0, 1)] {
            assert_eq!(budget_warning_mark(budget), mark, "budget {budget}");
            let crossing: Vec<i64> = (1..=budget.max(1) * 2)
                .filter(|n| crosses_budget_warning(*n, budget))
                .collect();
            assert_eq!(crossing, [mark], "budget {budget}");
        }
    }

    #[test]
    fn refusal_reasons_serialise_as_the_error_reasons() {
        for r in [
            CodeRefusalReason::CountryNotAllowed,
            CodeRefusalReason::DestinationResendTooSoon,
            CodeRefusalReason::DestinationLimitReached,
            CodeRefusalReason::UserDailyLimit,
            CodeRefusalReason::BudgetExhausted,
        ] {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
