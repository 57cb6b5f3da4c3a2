//! When and from what a report was made: the UTC date and time from the system clock, and the
//! commit lossfuse was built from. `lossfuse bench` and `lossfuse check` stamp their JSON with
//! these so that results from different machines and days can be told apart.

use std::time::{SystemTime, UNIX_EPOCH};

/// (date "YYYY-MM-DD", time "YYYY-MM-DDTHH:MM:SSZ") in UTC from the system clock.
pub fn utc_now() -> (String, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days as i64);
    let date = format!("{year:04}-{month:02}-{day:02}");
    let time = format!(
        "{date}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    (date, time)
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The commit lossfuse was built from (`git rev-parse HEAD` in its source tree) and whether that
/// tree has uncommitted changes to tracked files; None when the tree is not a git checkout (an
/// installed binary) or git is missing.
pub fn git_commit() -> Option<(String, bool)> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"]).filter(|c| !c.is_empty())?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some((head, dirty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_from_day_counts() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_415), (2025, 11, 23));
        assert_eq!(civil(-1), (1969, 12, 31));
    }

    #[test]
    fn the_time_stamp_extends_the_date() {
        let (date, time) = utc_now();
        assert_eq!(date.len(), 10);
        assert!(
            time.starts_with(&date) && time.ends_with('Z') && time.len() == 20,
            "{time}"
        );
    }
}
