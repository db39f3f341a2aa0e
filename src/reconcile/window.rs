//! Change windows, pure: when an operator allows deployments to an endpoint.
//!
//! A window opens on chosen weekdays at a wall-clock time in a named time zone and stays open
//! for a fixed (absolute) duration. Wall-clock times are resolved with the zone's rules for
//! that day, so a "02:00 Europe/Berlin" window follows daylight saving time: on the day the
//! clocks jump over 02:00 it opens at 03:00 (the first instant after the gap), and on the day
//! they repeat it opens at the first 02:00. The duration counts real time, so a 2h window
//! through a clock change is still two hours long. A window may run past midnight (Saturday
//! 22:00 for 6h closes Sunday 04:00); it cannot be longer than a week.
//!
//! Nothing here reads the clock or the store: callers pass `now`.

use std::fmt;
use std::time::Duration;

use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use time::OffsetDateTime;

/// The longest window allowed: a week (a longer one would simply always be open).
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// One named change window.
#[derive(Clone, Debug)]
pub struct Window {
    name: String,
    /// Bit `n` set = open on the weekday `n` days after Monday.
    days: u8,
    start: Time,
    duration: Duration,
    tz: TimeZone,
}

/// What is wrong with a window definition; each names the config key it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WindowError {
    /// `days`: empty, or a name that is not a weekday.
    Days(String),
    /// `start`: not a `HH:MM` (or `HH:MM:SS`) time of day.
    Start(String),
    /// `duration`: zero or longer than a week.
    Duration(String),
    /// `tz`: not an IANA time zone name known to the time-zone database.
    TimeZone(String),
}

impl WindowError {
    /// The config key this error is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Days(_) => "days",
            Self::Start(_) => "start",
            Self::Duration(_) => "duration",
            Self::TimeZone(_) => "tz",
        }
    }
}

impl fmt::Display for WindowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(m) | Self::Start(m) | Self::Duration(m) | Self::TimeZone(m) => {
                f.write_str(m)
            }
        }
    }
}

impl std::error::Error for WindowError {}

/// A window's definition on the wire (the agent API): the config's values, checked again
/// by [`WindowDef::window`] on the receiving side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowDef {
    /// The window's name.
    pub name: String,
    /// Weekday names (`mon`..`sun`).
    pub days: Vec<String>,
    /// `HH:MM:SS`, local time.
    pub start: String,
    /// How long it stays open.
    pub duration_seconds: u64,
    /// The IANA time zone.
    pub tz: String,
}

impl WindowDef {
    /// The window it defines, with every value checked as the config's are.
    pub fn window(&self) -> Result<Window, WindowError> {
        Window::parse(
            &self.name,
            &self.days,
            &self.start,
            Duration::from_secs(self.duration_seconds),
            &self.tz,
        )
    }
}

/// One opening of a window: `[start, end)` as instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    /// The first instant the window is open.
    pub start: OffsetDateTime,
    /// The first instant after it closes.
    pub end: OffsetDateTime,
}

/// Two windows are equal when they are defined alike (the zone compared by its IANA name).
impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.days == other.days
            && self.start == other.start
            && self.duration == other.duration
            && self.tz.iana_name() == other.tz.iana_name()
    }
}

impl Eq for Window {}

impl Window {
    /// Builds a window from its config values: weekday names (`mon`..`sun`, full names,
    /// any case, `weekdays`, `weekend` or `daily`), a `HH:MM[:SS]` start, a duration and an
    /// IANA zone name. Reports the first bad value; [`Window::check`] reports them all.
    pub fn parse(
        name: &str,
        days: &[String],
        start: &str,
        duration: Duration,
        tz: &str,
    ) -> Result<Self, WindowError> {
        Self::check(name, days, start, duration, tz).map_err(|mut e| e.swap_remove(0))
    }

    /// Like [`Window::parse`], but checks every value and returns every problem.
    pub fn check(
        name: &str,
        days: &[String],
        start: &str,
        duration: Duration,
        tz: &str,
    ) -> Result<Self, Vec<WindowError>> {
        let days = parse_day_list(days);
        let start = parse_time(start).ok_or_else(|| {
            WindowError::Start(format!(
                "`{start}` is not a time of day (use HH:MM, 24-hour)"
            ))
        });
        let duration = check_duration(duration);
        let tz = TimeZone::get(tz).map_err(|_| {
            WindowError::TimeZone(format!(
                "`{tz}` is not a known time zone (use an IANA name such as Europe/Berlin or UTC)"
            ))
        });
        match (days, start, duration, tz) {
            (Ok(days), Ok(start), Ok(duration), Ok(tz)) => Ok(Self {
                name: name.to_owned(),
                days,
                start,
                duration,
                tz,
            }),
            (days, start, duration, tz) => Err([days.err(), start.err(), duration.err(), tz.err()]
                .into_iter()
                .flatten()
                .collect()),
        }
    }

    /// Its definition, as the agent API sends it ([`WindowDef::window`] builds it back).
    pub fn definition(&self) -> WindowDef {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        WindowDef {
            name: self.name.clone(),
            days: (0..7)
                .filter(|n| self.days & (1 << n) != 0)
                .map(|n| NAMES[n].to_owned())
                .collect(),
            start: format!(
                "{:02}:{:02}:{:02}",
                self.start.hour(),
                self.start.minute(),
                self.start.second()
            ),
            duration_seconds: self.duration.as_secs(),
            tz: self.tz.iana_name().unwrap_or("UTC").to_owned(),
        }
    }

    /// The window's name in config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether deployments are allowed at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.current(now).is_some()
    }

    /// The opening that contains `now`, if the window is open.
    pub fn current(&self, now: OffsetDateTime) -> Option<Opening> {
        let now_ts = to_timestamp(now);
        let today = self.tz.to_datetime(now_ts).date();
        // An opening that started up to a week (plus a day of DST slack) ago may still run.
        let back = i64::try_from(self.duration.as_secs() / 86_400).unwrap_or(7) + 1;
        (0..=back)
            .filter_map(|n| today.checked_sub(n.days()).ok())
            .filter_map(|date| self.opening_on(date))
            .find(|o| o.start <= now && now < o.end)
    }

    /// The opening that is current at `now`, or else the next one to start after it.
    pub fn next_open(&self, now: OffsetDateTime) -> Opening {
        if let Some(open) = self.current(now) {
            return open;
        }
        let today = self.tz.to_datetime(to_timestamp(now)).date();
        // Every weekday occurs within 8 local days, so an opening after `now` is found there.
        (0..=8)
            .filter_map(|n| today.checked_add(n.days()).ok())
            .filter_map(|date| self.opening_on(date))
            .find(|o| o.start > now)
            .expect("a window with at least one weekday opens within 8 days")
    }

    /// The openings that start strictly before `until`, latest first (back to the start of
    /// the time-zone database's range). Every weekday recurs each week, so taking a few of
    /// them always ends.
    pub fn openings_before(&self, until: OffsetDateTime) -> impl Iterator<Item = Opening> + '_ {
        let last = self.tz.to_datetime(to_timestamp(until)).date();
        // Starts on successive local dates are in order (a gap or a repeated hour moves one
        // by at most the shift), so walking dates backwards yields them latest first.
        (0i64..)
            .map_while(move |n| last.checked_sub(n.days()).ok())
            .filter_map(|date| self.opening_on(date))
            .filter(move |o| o.start < until)
    }

    /// The opening that starts on the local `date`, if the window opens that weekday.
    fn opening_on(&self, date: Date) -> Option<Opening> {
        if self.days & day_bit(date.weekday()) == 0 {
            return None;
        }
        // `to_zoned` resolves a wall time that falls in a DST gap to the instant after the gap
        // and an ambiguous (repeated) wall time to its first occurrence.
        let zoned = date
            .to_datetime(self.start)
            .to_zoned(self.tz.clone())
            .ok()?;
        let start = from_timestamp(zoned.timestamp())?;
        let end = start + self.duration;
        Some(Opening { start, end })
    }
}

fn parse_day_list(days: &[String]) -> Result<u8, WindowError> {
    if days.is_empty() {
        return Err(WindowError::Days(
            "no days given (use e.g. [\"sat\", \"sun\"] or [\"daily\"])".into(),
        ));
    }
    days.iter().try_fold(0u8, |mask, day| {
        let bits = parse_days(day).ok_or_else(|| {
            WindowError::Days(format!(
                "`{day}` is not a weekday (use mon, tue, wed, thu, fri, sat, sun, weekdays, \
                 weekend or daily)"
            ))
        })?;
        Ok(mask | bits)
    })
}

fn check_duration(duration: Duration) -> Result<Duration, WindowError> {
    if duration.is_zero() {
        return Err(WindowError::Duration(
            "a window must last longer than 0s".into(),
        ));
    }
    if duration > MAX_DURATION {
        return Err(WindowError::Duration(format!(
            "{} is longer than a week; use days = [\"daily\"] with a shorter duration",
            humantime::format_duration(duration)
        )));
    }
    Ok(duration)
}

fn day_bit(day: Weekday) -> u8 {
    1 << (day.to_monday_zero_offset() as u8)
}

fn parse_days(s: &str) -> Option<u8> {
    let day = match s.trim().to_ascii_lowercase().as_str() {
        "daily" | "all" => return Some(0x7f),
        "weekdays" => return Some(0x1f),
        "weekend" => return Some(0x60),
        "mon" | "monday" => Weekday::Monday,
        "tue" | "tuesday" => Weekday::Tuesday,
        "wed" | "wednesday" => Weekday::Wednesday,
        "thu" | "thursday" => Weekday::Thursday,
        "fri" | "friday" => Weekday::Friday,
        "sat" | "saturday" => Weekday::Saturday,
        "sun" | "sunday" => Weekday::Sunday,
        _ => return None,
    };
    Some(day_bit(day))
}

fn parse_time(s: &str) -> Option<Time> {
    let mut parts = s.trim().split(':');
    let hour: i8 = parts.next()?.parse().ok()?;
    let minute: i8 = parts.next()?.parse().ok()?;
    let second: i8 = match parts.next() {
        Some(sec) => sec.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    Time::new(hour, minute, second, 0).ok()
}

fn to_timestamp(t: OffsetDateTime) -> Timestamp {
    // OffsetDateTime's range (±9999 years) lies inside Timestamp's, so this cannot fail for
    // the instants a clock produces; fall back to the epoch rather than panic on nonsense.
    Timestamp::from_nanosecond(t.unix_timestamp_nanos()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn from_timestamp(t: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(t.as_nanosecond()).ok()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn window(days: &[&str], start: &str, duration: &str, tz: &str) -> Window {
        let days: Vec<String> = days.iter().map(|d| d.to_string()).collect();
        let duration = humantime::parse_duration(duration).unwrap();
        Window::parse("w", &days, start, duration, tz).unwrap()
    }

    #[test]
    fn a_definition_builds_the_same_window_back() {
        for w in [
            window(&["sat", "sun"], "02:00", "2h", "Europe/Berlin"),
            window(&["daily"], "23:30:15", "90m", "America/New_York"),
            window(&["weekdays"], "00:00", "7days", "UTC"),
        ] {
            let def = w.definition();
            assert_eq!(def.window().unwrap(), w, "{def:?}");
        }
        let mut bad = window(&["mon"], "02:00", "1h", "UTC").definition();
        bad.tz = "Mars/Olympus".into();
        assert_eq!(bad.window().unwrap_err().key(), "tz");
    }

    #[test]
    fn weekend_night_window_in_berlin_summer_time() {
        let w = window(&["sat", "sun"], "02:00", "2h", "Europe/Berlin");
        // Saturday 2026-06-13 02:00 CEST = 00:00 UTC.
        assert!(!w.is_open(datetime!(2026-06-12 23:59:59 UTC)));
        assert!(w.is_open(datetime!(2026-06-13 00:00 UTC)));
        assert!(w.is_open(datetime!(2026-06-13 01:59:59 UTC)));
        assert!(!w.is_open(datetime!(2026-06-13 02:00 UTC)));
        // A Friday at the same local hour is closed.
        assert!(!w.is_open(datetime!(2026-06-12 00:30 UTC)));
        let next = w.next_open(datetime!(2026-06-10 12:00 UTC));
        assert_eq!(next.start, datetime!(2026-06-13 00:00 UTC));
        assert_eq!(next.end, datetime!(2026-06-13 02:00 UTC));
        // After Saturday's opening closes, the next is Sunday's.
        let next = w.next_open(datetime!(2026-06-13 03:00 UTC));
        assert_eq!(next.start, datetime!(2026-06-14 00:00 UTC));
    }

    #[test]
    fn same_wall_time_moves_with_daylight_saving() {
        let w = window(&["daily"], "12:00", "1h", "Europe/Berlin");
        // Winter: CET = UTC+1; summer: CEST = UTC+2.
        assert_eq!(
            w.next_open(datetime!(2026-01-10 00:00 UTC)).start,
            datetime!(2026-01-10 11:00 UTC)
        );
        assert_eq!(
            w.next_open(datetime!(2026-07-10 00:00 UTC)).start,
            datetime!(2026-07-10 10:00 UTC)
        );
    }

    #[test]
    fn start_in_the_spring_forward_gap_opens_after_the_gap() {
        // 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST; 02:30 does not exist.
        let w = window(&["sun"], "02:30", "1h", "Europe/Berlin");
        let o = w.next_open(datetime!(2026-03-28 12:00 UTC));
        // The instant after the gap is 03:30 CEST = 01:30 UTC; the hour is a real hour.
        assert_eq!(o.start, datetime!(2026-03-29 01:30 UTC));
        assert_eq!(o.end, datetime!(2026-03-29 02:30 UTC));
    }

    #[test]
    fn start_in_the_repeated_hour_opens_at_the_first_one() {
        // 2026-10-25: Berlin clocks go back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
        let w = window(&["sun"], "02:30", "2h", "Europe/Berlin");
        let o = w.next_open(datetime!(2026-10-24 12:00 UTC));
        assert_eq!(o.start, datetime!(2026-10-25 00:30 UTC));
        // Two real hours, although the wall clock only moves from 02:30 to 03:30.
        assert_eq!(o.end, datetime!(2026-10-25 02:30 UTC));
    }

    #[test]
    fn window_running_past_midnight_is_open_the_next_morning() {
        let w = window(&["sat"], "22:00", "6h", "UTC");
        // Saturday 2026-11-28 22:00 -> Sunday 04:00.
        assert!(w.is_open(datetime!(2026-11-29 03:59 UTC)));
        assert!(!w.is_open(datetime!(2026-11-29 04:00 UTC)));
        let o = w.current(datetime!(2026-11-29 01:00 UTC)).unwrap();
        assert_eq!(o.start, datetime!(2026-11-28 22:00 UTC));
        // Sunday itself is not an opening day.
        assert!(!w.is_open(datetime!(2026-11-29 22:30 UTC)));
    }

    #[test]
    fn week_long_window_is_always_open() {
        let w = window(&["mon"], "00:00", "7days", "UTC");
        for day in 0..14 {
            let t = datetime!(2026-11-02 00:00 UTC) + time::Duration::hours(day * 12 + 5);
            assert!(w.is_open(t), "{t}");
        }
    }

    #[test]
    fn next_open_when_open_is_the_current_opening() {
        let w = window(&["weekdays"], "09:00", "8h", "America/New_York");
        let now = datetime!(2026-11-30 15:00 UTC); // Monday 10:00 EST
        let o = w.next_open(now);
        assert!(o.start <= now && now < o.end);
        assert_eq!(o.start, datetime!(2026-11-30 14:00 UTC));
        // Friday evening: the next opening is Monday.
        let o = w.next_open(datetime!(2026-12-04 23:00 UTC));
        assert_eq!(o.start, datetime!(2026-12-07 14:00 UTC));
    }

    #[test]
    fn bad_values_name_their_key() {
        let d = Duration::from_secs(3600);
        let days = vec!["sat".to_string()];
        let e = Window::parse("w", &["someday".into()], "02:00", d, "UTC").unwrap_err();
        assert_eq!(e.key(), "days");
        assert!(e.to_string().contains("someday"), "{e}");
        assert_eq!(
            Window::parse("w", &[], "02:00", d, "UTC")
                .unwrap_err()
                .key(),
            "days"
        );
        for start in ["25:00", "2am", "02:00:00:00", ""] {
            let e = Window::parse("w", &days, start, d, "UTC").unwrap_err();
            assert_eq!(e.key(), "start", "{start}");
        }
        let e = Window::parse("w", &days, "02:00", Duration::ZERO, "UTC").unwrap_err();
        assert_eq!(e.key(), "duration");
        let e = Window::parse("w", &days, "02:00", MAX_DURATION * 2, "UTC").unwrap_err();
        assert_eq!(e.key(), "duration");
        let e = Window::parse("w", &days, "02:00", d, "Mars/Olympus").unwrap_err();
        assert_eq!(e.key(), "tz");
        assert!(e.to_string().contains("Mars/Olympus"), "{e}");
        let all = Window::check("w", &["x".into()], "x", Duration::ZERO, "x").unwrap_err();
        let keys: Vec<_> = all.iter().map(WindowError::key).collect();
        assert_eq!(keys, ["days", "start", "duration", "tz"]);
    }
}
