//! Times as an operator reads them: a calendar date and time plus how long ago
//! (`2026-11-30 16:40:28 UTC, 3 min ago`).
//!
//! Decided here: the text, and nothing about which moment "now" is. Every function takes the
//! current time as a parameter (milliseconds since the Unix epoch); the front ends read the
//! clock and pass it in, so this stays pure and its tests need no clock. Dates are UTC: the box
//! runs in UTC, and a zone written out (`UTC`) cannot be misread by an operator in another one
//! (docs/decisions.md says why no time-zone crate).

/// `unix_ms` as `2026-11-30 16:40:28 UTC` (the milliseconds dropped).
pub fn date_time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// How long before `now_unix_ms` the moment `then_unix_ms` was: `12 s ago`, `3 min ago`,
/// `2 h 5 min ago`, `4 d 3 h ago`; `in 12 s` for a moment ahead of `now` (a clock set back).
pub fn age(then_unix_ms: u64, now_unix_ms: u64) -> String {
    if then_unix_ms > now_unix_ms {
        return format!(
            "in {}",
            span_secs((then_unix_ms - now_unix_ms).div_ceil(1000))
        );
    }
    format!("{} ago", span_secs((now_unix_ms - then_unix_ms) / 1000))
}

/// The date and the age together: `2026-11-30 16:40:28 UTC, 3 min ago`.
pub fn date_time_and_age(then_unix_ms: u64, now_unix_ms: u64) -> String {
    format!(
        "{}, {}",
        date_time(then_unix_ms),
        age(then_unix_ms, now_unix_ms)
    )
}

/// A span in whole seconds, in its two largest units: `45 s`, `3 min`, `2 h 5 min`, `4 d 3 h`.
pub fn span_secs(secs: u64) -> String {
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

/// The proleptic Gregorian date of the day `days` after 1970-01-01: eras of 400 years
/// (146 097 days) counted from 0000-03-01, so that the leap day is the last day of its year
/// and falls out of the arithmetic without a table.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    const EPOCH_SHIFT: u64 = 719_468;
    const DAYS_PER_ERA: u64 = 146_097;
    let z = days + EPOCH_SHIFT;
    let era = z / DAYS_PER_ERA;
    let day_of_era = z % DAYS_PER_ERA; // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_the_calendar() {
        // Checked against `date -u -d @SECS`.
        assert_eq!(date_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(date_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(date_time(1_709_164_800_999), "2024-02-29 00:00:00 UTC");
        assert_eq!(date_time(1_796_056_828_671), "2026-11-30 16:40:28 UTC");
        assert_eq!(date_time(4_102_444_799_000), "2099-12-31 23:59:59 UTC");
        // 2100 is not a leap year: 28 February is followed by 1 March.
        assert_eq!(date_time(4_107_542_400_000), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let days_in = |y: u64, m: u64| match m {
            2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expected = (1970, 1, 1);
        for days in 0..200 * 366 {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            expected = if d < days_in(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn ages_use_the_two_largest_units() {
        let now = 1_796_056_828_671;
        assert_eq!(age(now, now), "0 s ago");
        assert_eq!(age(now - 59_999, now), "59 s ago");
        assert_eq!(age(now - 180_000, now), "3 min ago");
        assert_eq!(age(now - 3_600_000, now), "1 h ago");
        assert_eq!(age(now - 7_500_000, now), "2 h 5 min ago");
        assert_eq!(age(now - 86_400_000, now), "1 d ago");
        assert_eq!(
            age(now - (4 * 86_400 + 3 * 3600 + 59) * 1000, now),
            "4 d 3 h ago"
        );
        assert_eq!(age(now + 1, now), "in 1 s");
        assert_eq!(
            date_time_and_age(now - 180_000, now),
            "2026-11-30 16:37:28 UTC, 3 min ago"
        );
    }
}
