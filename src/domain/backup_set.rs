//! Backup sets as a domain: the names that may reach the filesystem, the
//! manifest that makes a set of files a backup, and the retention policy.
//! Everything here is pure (no I/O), so the rules are unit-tested directly.
//!
//! Layout under the backup root (documented in the tools' descriptions):
//! ```text
//! <backup root>/<project>/<set id>.manifest.json            one per backup set (the commit point)
//! <backup root>/<project>/<timestamp>-<service>.pgdump.zst   pg_dump -Fc, zstd-compressed
//! <backup root>/<project>/<timestamp>-<service>.archive.gz   mongodump --archive --gzip, as streamed
//! <backup root>/<project>/<timestamp>-<service>.<volume>.tar.zst   a named volume's tar, zstd-compressed
//! <backup root>/<project>/<timestamp>-<service>.rdb.zst      a Redis BGSAVE dump, zstd-compressed
//! ```
//! where `<set id>` is `<timestamp>` or `<timestamp>-<label>` and `<timestamp>`
//! is UTC `YYYYMMDDTHHMMSSZ`. A file is a backup only when a manifest lists it.
use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use crate::domain::error::ToolError;

/// The manifest's format marker; a JSON file without it is not ours.
pub const MANIFEST_FORMAT: &str = "stackpilot-backup/1";
pub const MANIFEST_SUFFIX: &str = ".manifest.json";
pub const PARTIAL_SUFFIX: &str = ".partial";
/// Longest set id / file name component accepted (well under NAME_MAX).
pub const MAX_NAME: usize = 128;
pub const MAX_LABEL: usize = 64;

/// `YYYYMMDDTHHMMSSZ`: sorts as text in time order.
const STAMP_LEN: usize = 16;

fn name_chars_ok(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a name that becomes (part of) a file name: only `[0-9A-Za-z._-]`,
/// no `..`, no leading dot, bounded. Paths, NUL and traversal cannot pass.
pub fn check_name(field: &str, s: &str, max: usize) -> Result<(), ToolError> {
    let shown = crate::domain::redact::cap(&s.replace('\0', "\\0"), 80);
    if s.is_empty() {
        return Err(ToolError::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(ToolError::invalid(
            field,
            format!("`{shown}` is longer than {max} characters"),
        ));
    }
    if !name_chars_ok(s) || s.contains("..") || s.starts_with('.') || s.starts_with('-') {
        return Err(ToolError::invalid(
            field,
            format!(
                "`{shown}` may only contain letters, digits, `.`, `_` and `-` (no `/`, no `..`, no NUL, no leading `.` or `-`)"
            ),
        ));
    }
    Ok(())
}

/// A label for a backup set: letters, digits, `-`, `_`, at most 64.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Label(String);

impl Label {
    pub fn parse(s: &str) -> Result<Self, ToolError> {
        let shown = crate::domain::redact::cap(&s.replace('\0', "\\0"), 80);
        if s.is_empty() || s.len() > MAX_LABEL {
            return Err(ToolError::invalid(
                "label",
                format!("`{shown}` must be 1 to {MAX_LABEL} characters"),
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ToolError::invalid(
                "label",
                format!("`{shown}` may only contain letters, digits, `-` and `_`"),
            ));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// UTC second a backup set was started at; its text form names the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(OffsetDateTime);

impl Stamp {
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    pub fn from_datetime(t: OffsetDateTime) -> Self {
        let t = t.to_offset(time::UtcOffset::UTC);
        Self(t.replace_nanosecond(0).unwrap_or(t))
    }

    pub fn from_unix(secs: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp(secs)
            .ok()
            .map(Self::from_datetime)
    }

    /// Parses `YYYYMMDDTHHMMSSZ` (exactly).
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != STAMP_LEN || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let year = digits(0..4)? as i32;
        let month = time::Month::try_from(digits(4..6)? as u8).ok()?;
        let day = digits(6..8)? as u8;
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let t = Time::from_hms(
            digits(9..11)? as u8,
            digits(11..13)? as u8,
            digits(13..15)? as u8,
        )
        .ok()?;
        Some(Self(PrimitiveDateTime::new(date, t).assume_utc()))
    }

    pub fn text(&self) -> String {
        let t = self.0;
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    }

    pub fn rfc3339(&self) -> String {
        crate::domain::time::unix_to_rfc3339(self.0.unix_timestamp())
    }

    pub fn unix(&self) -> i64 {
        self.0.unix_timestamp()
    }

    /// The calendar day (UTC) for keep_daily.
    pub fn day(&self) -> Date {
        self.0.date()
    }

    /// The ISO week (year, week) for keep_weekly.
    pub fn iso_week(&self) -> (i32, u8) {
        let (y, w, _) = self.0.to_iso_week_date();
        (y, w)
    }
}

/// The id of a backup set: `<timestamp>` or `<timestamp>-<label>`. The only
/// form in which an agent names a backup; validated before any path is built.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetId {
    stamp_text: String,
    label: Option<String>,
}

impl SetId {
    pub fn new(stamp: Stamp, label: Option<&Label>) -> Self {
        Self {
            stamp_text: stamp.text(),
            label: label.map(|l| l.as_str().to_string()),
        }
    }

    /// Parses an id given by an agent (`backup_id`); `field` names it in errors.
    pub fn parse(field: &str, s: &str) -> Result<Self, ToolError> {
        check_name(field, s, MAX_NAME)?;
        let bad = || {
            ToolError::invalid(
                field,
                format!(
                    "`{}` is not a backup set id: expected <UTC timestamp YYYYMMDDTHHMMSSZ>[-<label>], as list_backups shows",
                    crate::domain::redact::cap(s, 80)
                ),
            )
        };
        let stamp_text = s.get(..STAMP_LEN).ok_or_else(bad)?;
        Stamp::parse(stamp_text).ok_or_else(bad)?;
        let label = match &s[STAMP_LEN..] {
            "" => None,
            rest => {
                let l = rest.strip_prefix('-').ok_or_else(bad)?;
                Label::parse(l).map_err(|_| bad())?;
                Some(l.to_string())
            }
        };
        Ok(Self {
            stamp_text: stamp_text.to_string(),
            label,
        })
    }

    pub fn stamp(&self) -> Stamp {
        // Constructed only from a valid stamp.
        Stamp::parse(&self.stamp_text)
            .unwrap_or_else(|| Stamp::from_datetime(OffsetDateTime::UNIX_EPOCH))
    }

    pub fn stamp_text(&self) -> &str {
        &self.stamp_text
    }

    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    pub fn manifest_name(&self) -> String {
        format!("{self}{MANIFEST_SUFFIX}")
    }

    /// The set id a manifest file name belongs to, if it is one of ours.
    pub fn from_manifest_name(name: &str) -> Option<Self> {
        let id = name.strip_suffix(MANIFEST_SUFFIX)?;
        Self::parse("file", id).ok()
    }
}

impl std::fmt::Display for SetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(l) => write!(f, "{}-{l}", self.stamp_text),
            None => f.write_str(&self.stamp_text),
        }
    }
}

/// How a service's data is taken.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `pg_dump -Fc` through docker exec, zstd-compressed.
    PgDump,
    /// `mongodump --archive --gzip` through docker exec, stored as streamed.
    Mongodump,
    /// A tar of each named volume through a short-lived helper container, zstd-compressed.
    Volume,
    /// Redis: `BGSAVE`, then the dump file streamed through docker exec, zstd-compressed.
    Redis,
}

impl Method {
    pub const NAMES: [&'static str; 5] = ["pg_dump", "mongodump", "redis", "volume", "none"];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::PgDump => "pg_dump",
            Method::Mongodump => "mongodump",
            Method::Volume => "volume",
            Method::Redis => "redis",
        }
    }

    /// The file extension (after `<timestamp>-<service>.`).
    pub fn extension(self) -> &'static str {
        match self {
            Method::PgDump => "pgdump.zst",
            Method::Mongodump => "archive.gz",
            Method::Volume => "tar.zst",
            Method::Redis => "rdb.zst",
        }
    }

    /// Whether stackpilot compresses the stream (mongodump compresses itself).
    pub fn zstd(self) -> bool {
        !matches!(self, Method::Mongodump)
    }
}

/// The data file of one service (and volume) in a set.
pub fn data_file_name(
    stamp: &str,
    service: &str,
    volume: Option<&str>,
    method: Method,
) -> Result<String, ToolError> {
    check_name("services", service, MAX_NAME)?;
    if let Some(v) = volume {
        check_name("volume", v, MAX_NAME)?;
    }
    let name = match volume {
        Some(v) => format!("{stamp}-{service}.{v}.{}", method.extension()),
        None => format!("{stamp}-{service}.{}", method.extension()),
    };
    check_name("file", &name, 255 - PARTIAL_SUFFIX.len())?;
    Ok(name)
}

/// One file of a backup set, as recorded at backup time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestEntry {
    pub service: String,
    pub role: String,
    pub method: Method,
    /// The service's image when the backup was taken.
    pub image: String,
    /// The named volume (method `volume`), as docker names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// The database dumped (method `pg_dump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// File name inside the set's directory.
    pub file: String,
    /// `zstd`, or `gzip` (mongodump's own).
    pub compression: String,
    /// Bytes of the file on disk.
    pub bytes: u64,
    /// Bytes of the dump stream before stackpilot compressed it.
    pub stream_bytes: u64,
    /// sha256 (hex) of the file on disk.
    pub sha256: String,
    /// Versions of the tools that wrote it (`pg_dump`, `mongodump`, `tar`, `redis`, `stackpilot`).
    pub tool_versions: BTreeMap<String, String>,
    pub duration_s: f64,
    /// Rows per table (`schema.table`), documents per collection (`db.collection`),
    /// keys per Redis database (`db0`), or `files` / `directories` for a volume, taken at
    /// backup time.
    pub counts: BTreeMap<String, u64>,
    /// What stackpilot had to say about how this file was taken (a Redis without
    /// persistence, a dump file removed again), when anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The manifest of one backup set: the commit point. Written last, atomically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Manifest {
    /// Always `stackpilot-backup/1`.
    pub format: String,
    pub id: String,
    pub project: String,
    pub stack_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// RFC 3339 (UTC), the set's timestamp.
    pub created_at: String,
    pub finished_at: String,
    pub duration_s: f64,
    pub stackpilot_version: String,
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    pub fn services(&self) -> BTreeSet<String> {
        self.entries.iter().map(|e| e.service.clone()).collect()
    }

    /// Checks a manifest read from disk: ours, named as its file says, and
    /// listing only file names that cannot leave the set's directory.
    pub fn validate(&self, expected: &SetId) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format is `{}`, not {MANIFEST_FORMAT}",
                self.format
            ));
        }
        if self.id != expected.to_string() {
            return Err(format!("id `{}` does not match its file name", self.id));
        }
        if self.entries.is_empty() {
            return Err("lists no files".into());
        }
        for e in &self.entries {
            check_name("file", &e.file, 255).map_err(|err| err.message)?;
            if !e.file.starts_with(expected.stamp_text()) || e.file.ends_with(MANIFEST_SUFFIX) {
                return Err(format!("file `{}` does not belong to this set", e.file));
            }
            if e.sha256.len() != 64 || !e.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("file `{}` has no valid sha256", e.file));
            }
        }
        Ok(())
    }
}

/// How many backups to keep, per service (restic's semantics): the newest
/// `keep_last`; the newest of each of the newest `keep_daily` days (UTC) that
/// have one; the newest of each of the newest `keep_weekly` ISO weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Policy {
    pub keep_last: u32,
    pub keep_daily: u32,
    pub keep_weekly: u32,
}

/// What retention needs to know about a set.
#[derive(Debug, Clone)]
pub struct SetFacts {
    pub id: SetId,
    pub services: BTreeSet<String>,
}

/// Why a policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "keep_last, keep_daily and keep_weekly are all 0: this policy would delete every backup"
    )]
    DeletesEverything,
}

/// The ids to keep. A set survives when the policy keeps it for any of its
/// services, so the newest backup of every service always survives. A policy
/// that keeps nothing at all is refused rather than applied.
pub fn retain(sets: &[SetFacts], policy: &Policy) -> Result<BTreeSet<SetId>, PolicyError> {
    if policy.keep_last == 0 && policy.keep_daily == 0 && policy.keep_weekly == 0 {
        return Err(PolicyError::DeletesEverything);
    }
    let mut by_service: BTreeMap<&str, Vec<&SetFacts>> = BTreeMap::new();
    for s in sets {
        for svc in &s.services {
            by_service.entry(svc.as_str()).or_default().push(s);
        }
    }
    let mut keep = BTreeSet::new();
    for series in by_service.values_mut() {
        // Newest first (ids sort as time; the label breaks ties deterministically).
        series.sort_by(|a, b| b.id.cmp(&a.id));
        if let Some(newest) = series.first() {
            keep.insert(newest.id.clone());
        }
        for s in series.iter().take(policy.keep_last as usize) {
            keep.insert(s.id.clone());
        }
        let mut days = BTreeSet::new();
        let mut weeks = BTreeSet::new();
        for s in series.iter() {
            let stamp = s.id.stamp();
            if days.len() < policy.keep_daily as usize && days.insert(stamp.day()) {
                keep.insert(s.id.clone());
            }
            if weeks.len() < policy.keep_weekly as usize && weeks.insert(stamp.iso_week()) {
                keep.insert(s.id.clone());
            }
        }
    }
    Ok(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(s: &str) -> Stamp {
        Stamp::parse(s).expect("stamp")
    }

    #[test]
    fn stamps_round_trip_and_reject_garbage() {
        let s = stamp("20261124T130501Z");
        assert_eq!(s.text(), "20261124T130501Z");
        assert_eq!(s.rfc3339(), "2026-11-24T13:05:01Z");
        for bad in [
            "20261324T130501Z",
            "20261124T250501Z",
            "2026112xT130501Z",
            "20261124 130501Z",
            "20261124T130501",
            "+0261124T130501Z",
        ] {
            assert!(Stamp::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            Stamp::from_unix(0).map(|s| s.text()).as_deref(),
            Some("19700101T000000Z")
        );
    }

    #[test]
    fn set_ids_parse_and_reject_traversal() {
        let id = SetId::parse("backup_id", "20261124T130501Z-nightly_1").expect("id");
        assert_eq!(id.label(), Some("nightly_1"));
        assert_eq!(id.to_string(), "20261124T130501Z-nightly_1");
        assert_eq!(
            id.manifest_name(),
            "20261124T130501Z-nightly_1.manifest.json"
        );
        assert_eq!(
            SetId::parse("backup_id", "20261124T130501Z")
                .expect("bare")
                .label(),
            None
        );
        for bad in [
            "../20261124T130501Z",
            "20261124T130501Z/../../etc",
            "/etc/passwd",
            "20261124T130501Z\0",
            "20261124T130501Z-a.b",
            "20261124T130501Z-",
            "20261124T130501Zx",
            "20261124T130501Z-..",
            "",
            "latest",
        ] {
            let err = SetId::parse("backup_id", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("backup_id"), "{bad}");
        }
        assert!(SetId::parse(
            "backup_id",
            &format!("20261124T130501Z-{}", "a".repeat(200))
        )
        .is_err());
    }

    #[test]
    fn labels_are_restricted() {
        assert!(Label::parse("pre-restore_2").is_ok());
        for bad in ["", "a/b", "..", "a.b", "x\0", "é", &"a".repeat(65)] {
            let err = Label::parse(bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("label"));
        }
    }

    #[test]
    fn file_names_are_checked() {
        assert_eq!(
            data_file_name("20261124T130501Z", "postgres", None, Method::PgDump).expect("name"),
            "20261124T130501Z-postgres.pgdump.zst"
        );
        assert_eq!(
            data_file_name(
                "20261124T130501Z",
                "cache",
                Some("p_cache_data"),
                Method::Volume
            )
            .expect("name"),
            "20261124T130501Z-cache.p_cache_data.tar.zst"
        );
        assert!(data_file_name("20261124T130501Z", "../x", None, Method::PgDump).is_err());
        assert!(data_file_name("20261124T130501Z", "x", Some("a/b"), Method::Volume).is_err());
    }

    fn entry(file: &str) -> ManifestEntry {
        ManifestEntry {
            service: "postgres".into(),
            role: "postgres".into(),
            method: Method::PgDump,
            image: "img".into(),
            volume: None,
            database: Some("postgres".into()),
            file: file.into(),
            compression: "zstd".into(),
            bytes: 1,
            stream_bytes: 1,
            sha256: "a".repeat(64),
            tool_versions: BTreeMap::new(),
            duration_s: 0.0,
            counts: BTreeMap::new(),
            note: None,
        }
    }

    #[test]
    fn manifests_cannot_point_outside_their_set() {
        let id = SetId::parse("x", "20261124T130501Z").expect("id");
        let mut m = Manifest {
            format: MANIFEST_FORMAT.into(),
            id: id.to_string(),
            project: "p".into(),
            stack_id: "s".into(),
            label: None,
            created_at: String::new(),
            finished_at: String::new(),
            duration_s: 0.0,
            stackpilot_version: "0".into(),
            entries: vec![entry("20261124T130501Z-postgres.pgdump.zst")],
        };
        assert!(m.validate(&id).is_ok());
        for bad in [
            "../20261124T130501Z-postgres.pgdump.zst",
            "20261124T130501Z/../../x",
            "20250101T000000Z-postgres.pgdump.zst",
            "20261124T130501Z.manifest.json",
        ] {
            m.entries = vec![entry(bad)];
            assert!(m.validate(&id).is_err(), "{bad}");
        }
        m.entries = vec![entry("20261124T130501Z-postgres.pgdump.zst")];
        m.format = "other".into();
        assert!(m.validate(&id).is_err());
    }

    /// 30 daily sets, one per day from 2026-10-01 (a Thursday) at 02:00, plus
    /// a second set on the last day at 14:00.
    fn thirty() -> Vec<SetFacts> {
        let mut sets = Vec::new();
        let start = stamp("20261001T020000Z").unix();
        for d in 0..30 {
            let s = Stamp::from_unix(start + d * 86_400).expect("stamp");
            sets.push(SetFacts {
                id: SetId::new(s, None),
                services: ["postgres".to_string()].into(),
            });
        }
        sets.push(SetFacts {
            id: SetId::parse("x", "20261030T140000Z-manual").expect("id"),
            services: ["postgres".to_string()].into(),
        });
        sets
    }

    fn ids(keep: &BTreeSet<SetId>) -> Vec<String> {
        keep.iter().map(|i| i.to_string()).collect()
    }

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let keep = retain(
            &thirty(),
            &Policy {
                keep_last: 7,
                keep_daily: 0,
                keep_weekly: 0,
            },
        )
        .expect("policy");
        assert_eq!(
            ids(&keep),
            [
                "20261025T020000Z",
                "20261026T020000Z",
                "20261027T020000Z",
                "20261028T020000Z",
                "20261029T020000Z",
                "20261030T020000Z",
                "20261030T140000Z-manual"
            ]
        );
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day() {
        let keep = retain(
            &thirty(),
            &Policy {
                keep_last: 0,
                keep_daily: 3,
                keep_weekly: 0,
            },
        )
        .expect("policy");
        // 30 Oct has two sets: the 14:00 one is that day's newest.
        assert_eq!(
            ids(&keep),
            [
                "20261028T020000Z",
                "20261029T020000Z",
                "20261030T140000Z-manual"
            ]
        );
    }

    #[test]
    fn keep_weekly_keeps_the_newest_of_each_iso_week() {
        let keep = retain(
            &thirty(),
            &Policy {
                keep_last: 0,
                keep_daily: 0,
                keep_weekly: 3,
            },
        )
        .expect("policy");
        // ISO weeks: 26 Oct (Mon)..30 Oct is week 44, 19..25 Oct week 43, 12..18 Oct week 42.
        assert_eq!(
            ids(&keep),
            [
                "20261018T020000Z",
                "20261025T020000Z",
                "20261030T140000Z-manual"
            ]
        );
    }

    #[test]
    fn policies_combine_as_a_union() {
        let keep = retain(
            &thirty(),
            &Policy {
                keep_last: 2,
                keep_daily: 3,
                keep_weekly: 2,
            },
        )
        .expect("policy");
        assert_eq!(
            ids(&keep),
            [
                "20261025T020000Z",
                "20261028T020000Z",
                "20261029T020000Z",
                "20261030T020000Z",
                "20261030T140000Z-manual"
            ]
        );
    }

    #[test]
    fn every_service_keeps_its_newest_and_nothing_is_refused() {
        let mut sets = thirty();
        // An old one-off backup of another service survives as its newest.
        sets.push(SetFacts {
            id: SetId::parse("x", "20260901T000000Z").expect("id"),
            services: ["cache".to_string()].into(),
        });
        let keep = retain(
            &sets,
            &Policy {
                keep_last: 1,
                keep_daily: 0,
                keep_weekly: 0,
            },
        )
        .expect("policy");
        assert_eq!(ids(&keep), ["20260901T000000Z", "20261030T140000Z-manual"]);
        assert_eq!(
            retain(
                &sets,
                &Policy {
                    keep_last: 0,
                    keep_daily: 0,
                    keep_weekly: 0
                }
            ),
            Err(PolicyError::DeletesEverything)
        );
        assert!(retain(
            &[],
            &Policy {
                keep_last: 1,
                keep_daily: 0,
                keep_weekly: 0
            }
        )
        .expect("empty")
        .is_empty());
    }
}
