//! Dates of documents: read from the formats' metadata (ISO 8601 in Office and HTML, `D:…` in
//! PDF), given by users as filter bounds, and shown as ISO dates. A date is kept as seconds since
//! the Unix epoch (UTC).

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Seconds since the epoch of a date or date-time in ISO 8601 / RFC 3339 form (`2024-03-31`,
/// `2024-03-31T12:00:00Z`, `2024-03-31T12:00:00+02:00`, `2024-03-31 12:00:00`; without a zone,
/// UTC) or in PDF form (`D:20240331120000+02'00'`, any suffix after the year optional).
/// `None` for anything else, including impossible dates.
pub fn parse(text: &str) -> Option<i64> {
    let t = text.trim();
    if let Some(pdf) = t.strip_prefix("D:") {
        return parse_pdf(pdf);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp());
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp());
        }
    }
    // Offsets without a colon (`+0200`), as some HTML meta tags write them.
    if let Ok(d) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z") {
        return Some(d.timestamp());
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp())
}

/// The part of a PDF date after `D:`: `YYYY[MM[DD[HH[mm[SS]]]]]` then optionally `Z` or
/// `±HH['mm']` (PDF 32000-1, 7.9.4).
fn parse_pdf(s: &str) -> Option<i64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits < 4 || digits % 2 != 0 || digits > 14 {
        return None;
    }
    let field = |at: usize, default: u32| -> Option<u32> {
        if at + 2 <= digits {
            s.get(at..at + 2)?.parse().ok()
        } else {
            Some(default)
        }
    };
    let year: i32 = s.get(..4)?.parse().ok()?;
    let (month, day) = (field(4, 1)?, field(6, 1)?);
    let (hour, minute, second) = (field(8, 0)?, field(10, 0)?, field(12, 0)?);
    let local = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    let zone = s[digits..].trim_end_matches('\'');
    let offset = match zone.as_bytes().first() {
        None | Some(b'Z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let mut parts = zone[1..].split('\'');
            let h: i32 = parts.next()?.parse().ok()?;
            let m: i32 = match parts.next() {
                Some(m) if !m.is_empty() => m.parse().ok()?,
                _ => 0,
            };
            let secs = h * 3600 + m * 60;
            if sign == b'-' { -secs } else { secs }
        }
        Some(_) => return None,
    };
    let zone = FixedOffset::east_opt(offset)?;
    Some(zone.from_local_datetime(&local).single()?.timestamp())
}

/// A bound of a date filter given by a user: a date-time as [`parse`] reads it, or a bare date
/// (`2024-03-31`) meaning the start of that day, or with `end_of_day` its last second (so that
/// `--after 2024-01-01 --before 2024-12-31` covers the whole year). `None` if unreadable.
pub fn parse_bound(text: &str, end_of_day: bool) -> Option<i64> {
    let t = text.trim();
    if end_of_day && NaiveDate::parse_from_str(t, "%Y-%m-%d").is_ok() {
        return parse(t).map(|s| s + 86_399);
    }
    parse(t)
}

/// Which bound of a date range was unreadable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundError {
    /// `"after"` or `"before"`.
    pub bound: &'static str,
    pub message: String,
}

/// A date range from a user's `after` and `before` (either may be missing; a bare `before` date
/// includes that day). Errors name the bound: unreadable, or `after` later than `before`.
pub fn range(
    after: Option<&str>,
    before: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), BoundError> {
    let read = |bound: &'static str, text: Option<&str>, end_of_day| match text {
        None => Ok(None),
        Some(t) => parse_bound(t, end_of_day)
            .map(Some)
            .ok_or_else(|| BoundError {
                bound,
                message: format!(
                    "{bound} {t:?} is not a date: write it as 2024-03-31 or 2024-03-31T12:00:00Z"
                ),
            }),
    };
    let (a, b) = (read("after", after, false)?, read("before", before, true)?);
    if let (Some(x), Some(y)) = (a, b)
        && x > y
    {
        return Err(BoundError {
            bound: "after",
            message: format!(
                "after {} is later than before {}: no document can match",
                after.unwrap_or_default(),
                before.unwrap_or_default()
            ),
        });
    }
    Ok((a, b))
}

/// `YYYY-MM-DD` (UTC) of `secs` since the epoch.
pub fn iso_date(secs: i64) -> String {
    Utc.timestamp_opt(secs, 0)
        .single()
        .map_or_else(|| secs.to_string(), |d| d.format("%Y-%m-%d").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, mi, s).unwrap().timestamp()
    }

    #[test]
    fn iso_forms() {
        let noon = Some(at(2024, 3, 31, 12, 30, 5));
        for (text, want) in [
            ("2024-03-31", Some(at(2024, 3, 31, 0, 0, 0))),
            ("2024-03-31T12:30:05Z", noon),
            ("2024-03-31T12:30:05", noon),
            ("2024-03-31 12:30:05", noon),
            ("2024-03-31T12:30:05.250Z", noon),
            ("2024-03-31T14:30:05+02:00", noon),
            ("2024-03-31T14:30:05+0200", noon),
            ("2024-03-31T12:30", Some(at(2024, 3, 31, 12, 30, 0))),
        ] {
            assert_eq!(parse(text), want, "{text:?}");
        }
        for bad in [
            "",
            "yesterday",
            "2024-02-30",
            "2024-13-01",
            "31/03/2024",
            "2024",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pdf_forms() {
        let noon = Some(at(2024, 3, 31, 12, 30, 5));
        for (text, want) in [
            ("D:20240331123005Z", noon),
            ("D:20240331143005+02'00'", noon),
            ("D:20240331073005-05'00", noon),
            ("D:20240331123005", noon),
            ("D:202403", Some(at(2024, 3, 1, 0, 0, 0))),
            ("D:2024", Some(at(2024, 1, 1, 0, 0, 0))),
        ] {
            assert_eq!(parse(text), want, "{text:?}");
        }
        for bad in [
            "D:",
            "D:20",
            "D:2024033",
            "D:20241340",
            "D:20240331x",
            "D:20240331+a'",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bounds_cover_whole_days() {
        let start = at(2024, 12, 31, 0, 0, 0);
        assert_eq!(parse_bound("2024-12-31", false), Some(start));
        assert_eq!(parse_bound("2024-12-31", true), Some(start + 86_399));
        assert_eq!(
            parse_bound("2024-12-31T06:00:00Z", true),
            Some(start + 6 * 3600)
        );
        assert_eq!(parse_bound("soon", true), None);
    }

    #[test]
    fn ranges_name_the_bad_bound() {
        let (a, b) = range(Some("2024-01-01"), Some("2024-12-31")).unwrap();
        assert_eq!(b.unwrap() - a.unwrap(), 366 * 86_400 - 1);
        assert_eq!(range(None, None).unwrap(), (None, None));
        let e = range(Some("2024-01-01"), Some("last week")).unwrap_err();
        assert_eq!(e.bound, "before");
        assert!(
            e.message.contains("\"last week\" is not a date"),
            "{}",
            e.message
        );
        let e = range(Some("2025-01-01"), Some("2024-01-01")).unwrap_err();
        assert_eq!(e.bound, "after");
        assert!(e.message.contains("later than before"), "{}", e.message);
        // One day is a valid range.
        assert!(range(Some("2024-05-05"), Some("2024-05-05")).is_ok());
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(at(2024, 2, 29, 23, 59, 59)), "2024-02-29");
        assert_eq!(iso_date(-86_400), "1969-12-31");
    }
}
