//! Spend limits. A budget caps what the API calls of a project, a key, an agent or a
//! routine may cost in a UTC day and a UTC calendar month; Baton's proxy meters every call,
//! so a budget is checked before a job starts and enforced at each call while it runs.
//! Amounts are kept in millionths of a dollar.

use chrono::{Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// What happens to a job that would start while a budget it falls under is spent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// The job fails `budget_exceeded` (not retried).
    #[default]
    Fail,
    /// The job waits, queued, until the window resets.
    Park,
}

/// A spend limit: dollars a UTC day, a UTC month, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Budget {
    /// US dollars a UTC day.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.000001, maximum = 1000000000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day_usd: Option<f64>,
    /// US dollars a UTC calendar month.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.000001, maximum = 1000000000))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub month_usd: Option<f64>,
    pub on_exceed: OnExceed,
}

/// The largest amount a budget may name.
pub const MAX_USD: f64 = 1e9;

/// Dollars as millionths of a dollar, to the nearest (`0.00525` is 5,250, though
/// `5.0 * 0.00105` is a hair below it in binary).
pub fn micro_usd(usd: f64) -> i64 {
    (usd * 1_000_000.0).round() as i64
}

/// A window a budget counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }

    /// The window (UTC) that `now_ms` falls in: its start, its end, and its name
    /// (`2026-12-06` or `2026-12`).
    pub fn window(self, now_ms: i64) -> (i64, i64, String) {
        let t = Utc
            .timestamp_millis_opt(now_ms)
            .single()
            .unwrap_or_default();
        match self {
            Self::Day => {
                let (from, to) = crate::routine::utc_day(now_ms);
                (from, to, t.format("%Y-%m-%d").to_string())
            }
            Self::Month => {
                let start = |y: i32, m: u32| {
                    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
                        .single()
                        .map_or(0, |d| d.timestamp_millis())
                };
                let (y, m) = (t.year(), t.month());
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    start(y, m),
                    start(next.0, next.1),
                    t.format("%Y-%m").to_string(),
                )
            }
        }
    }
}

impl Budget {
    /// Each amount present is positive and at most [`MAX_USD`]; `what` names the budget in
    /// the error.
    pub fn check(&self, what: &str) -> Result<(), String> {
        for (name, v) in [("day_usd", self.day_usd), ("month_usd", self.month_usd)] {
            if let Some(usd) = v
                && !(0.000_001..=MAX_USD).contains(&usd)
            {
                return Err(format!(
                    "{what}.{name} must be a number of dollars from 0.000001 to {MAX_USD} (leave it out for no limit)"
                ));
            }
        }
        Ok(())
    }

    /// The limits present: each period with its cap in millionths of a dollar.
    pub fn limits(&self) -> impl Iterator<Item = (Period, i64)> + '_ {
        [(Period::Day, self.day_usd), (Period::Month, self.month_usd)]
            .into_iter()
            .filter_map(|(p, usd)| usd.map(|u| (p, micro_usd(u))))
    }
}

/// How usage (the cost ledger) is grouped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum UsageGroup {
    /// The UTC day, `2026-12-06`.
    #[default]
    Day,
    Project,
    Key,
    Agent,
    Routine,
    Model,
}

/// Cost alerts: a job that costs more than `job_usd`, and the project's spend reaching
/// each of `thresholds` (percent) of each of its budgets. Each is raised once per job or
/// window: in the log, as an event in the job's log, and to `webhook_url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Alerts {
    /// An `http(s)` URL each alert is POSTed to, signed like a job's callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 2048, pattern = "^https?://"))]
    pub webhook_url: Option<String>,
    /// A job whose calls cost more than this many dollars raises an alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0.000001, maximum = 1000000000))]
    pub job_usd: Option<f64>,
    /// Percentages of each of the project's budgets that raise an alert when reached.
    #[cfg_attr(feature = "openapi", schema(max_items = 10))]
    #[serde(deserialize_with = "crate::int::vec")]
    pub thresholds: Vec<u32>,
}

impl Default for Alerts {
    fn default() -> Self {
        Self {
            webhook_url: None,
            job_usd: None,
            thresholds: vec![50, 80, 100],
        }
    }
}

impl Alerts {
    pub fn check(&self) -> Result<(), String> {
        if let Some(url) = &self.webhook_url {
            crate::spec::check_callback_url(url)
                .map_err(|e| format!("alerts.webhook_url: {}", e.message))?;
        }
        if let Some(usd) = self.job_usd
            && !(0.000_001..=MAX_USD).contains(&usd)
        {
            return Err(format!(
                "alerts.job_usd must be a number of dollars from 0.000001 to {MAX_USD}"
            ));
        }
        if self.thresholds.len() > 10 || self.thresholds.iter().any(|t| !(1..=1000).contains(t)) {
            return Err("alerts.thresholds: at most 10 percentages, each from 1 to 1000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_utc_days_and_calendar_months() {
        // 2026-12-31T23:59:59.999Z
        let t = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .unwrap()
            .timestamp_millis()
            + 999;
        let (from, to, name) = Period::Day.window(t);
        assert_eq!(
            (name.as_str(), to - from, to),
            ("2026-12-31", 86_400_000, t + 1)
        );
        let (from, to, name) = Period::Month.window(t);
        assert_eq!(name, "2026-12");
        assert_eq!(to, t + 1);
        assert_eq!(to - from, 31 * 86_400_000);
        let (_, _, name) = Period::Month.window(t + 1);
        assert_eq!(name, "2027-01");
    }

    #[test]
    fn budgets_are_checked() {
        let b = |d: f64| Budget {
            day_usd: Some(d),
            ..Budget::default()
        };
        assert!(b(0.5).check("budget").is_ok());
        assert!(
            b(0.0)
                .check("budget")
                .unwrap_err()
                .contains("budget.day_usd")
        );
        assert!(b(f64::NAN).check("budget").is_err());
        assert!(b(2e9).check("budget").is_err());
        assert_eq!(
            b(2.5).limits().collect::<Vec<_>>(),
            vec![(Period::Day, 2_500_000)]
        );
        let a = Alerts {
            thresholds: vec![0],
            ..Alerts::default()
        };
        assert!(a.check().is_err());
        assert!(Alerts::default().check().is_ok());
    }
}
