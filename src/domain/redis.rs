//! Redis as stackpilot reads it: `redis-cli` answers (INFO sections, CONFIG
//! GET pairs), what the server's persistence settings mean for a backup and a
//! restore, and the RDB file format's own integrity check (magic, version,
//! EOF opcode, CRC-64/Jones trailer). Pure: the tools run redis-cli, this
//! reads what it printed and the bytes of a dump.
use std::collections::BTreeMap;

/// The value of `field` in an INFO answer (`field:value` lines).
pub fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_string))
}

/// Keys per database from `INFO keyspace` (`db0:keys=3,expires=0,avg_ttl=0`),
/// by database name (`db0`). A database without keys is not listed by Redis.
pub fn keyspace_counts(info: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for line in info.lines().map(|l| l.trim_end_matches('\r').trim()) {
        let Some((db, rest)) = line.split_once(':') else {
            continue;
        };
        if !db.starts_with("db") || !db[2..].bytes().all(|b| b.is_ascii_digit()) || db.len() < 3 {
            continue;
        }
        let keys = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .ok_or_else(|| format!("no keys= in `{}`", crate::domain::redact::cap(line, 120)))?;
        let n: u64 = keys.parse().map_err(|_| {
            format!(
                "bad key count in `{}`",
                crate::domain::redact::cap(line, 120)
            )
        })?;
        out.insert(db.to_string(), n);
    }
    Ok(out)
}

/// `CONFIG GET a b c` in redis-cli's raw output: name and value on
/// alternating lines (an empty value is an empty line).
pub fn config_pairs(text: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = text
        .trim_end_matches('\n')
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// The first line of a redis-cli answer when it is an error reply.
pub fn error_reply(text: &str) -> Option<String> {
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let is_error = [
        "ERR",
        "NOAUTH",
        "WRONGPASS",
        "NOPERM",
        "LOADING",
        "MISCONF",
        "BUSY",
    ]
    .iter()
    .any(|p| first.starts_with(p))
        || first.starts_with("(error)")
        || first.starts_with("Could not connect")
        || first.starts_with("AUTH failed");
    is_error.then(|| crate::domain::redact::cap(first, 300))
}

/// What the server keeps on disk, from `CONFIG GET save appendonly dir
/// dbfilename appenddirname appendfilename`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// Directory of the dump file and the AOF.
    pub dir: String,
    pub dbfilename: String,
    /// RDB save points (`3600 1 300 100`); empty: no automatic snapshots.
    pub save: String,
    pub appendonly: bool,
    /// Redis 7's AOF directory (multi-part AOF); None before 7.0.
    pub appenddirname: Option<String>,
    pub appendfilename: String,
}

impl Persistence {
    pub fn from_config(c: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| c.get(k).cloned();
        let dir = get("dir")
            .filter(|d| d.starts_with('/'))
            .ok_or("CONFIG GET dir gave no absolute directory (is CONFIG renamed or disabled?)")?;
        let dbfilename = get("dbfilename")
            .filter(|f| !f.is_empty() && !f.contains('/'))
            .ok_or("CONFIG GET dbfilename gave no file name")?;
        Ok(Self {
            dir: dir.trim_end_matches('/').to_string(),
            dbfilename,
            save: get("save").unwrap_or_default(),
            appendonly: get("appendonly").is_some_and(|v| v == "yes"),
            appenddirname: get("appenddirname").filter(|d| !d.is_empty() && !d.contains('/')),
            appendfilename: get("appendfilename")
                .filter(|f| !f.is_empty() && !f.contains('/'))
                .unwrap_or_else(|| "appendonly.aof".into()),
        })
    }

    /// Neither snapshots nor an AOF: the data lives only in memory.
    pub fn off(&self) -> bool {
        self.save.trim().is_empty() && !self.appendonly
    }

    /// Where the dump file is.
    pub fn dump_path(&self) -> String {
        format!("{}/{}", self.dir, self.dbfilename)
    }

    /// A sentence for the manifest and the plan about what this means.
    pub fn describe(&self) -> String {
        match (self.save.trim().is_empty(), self.appendonly) {
            (true, false) => "persistence is off (save \"\", appendonly no): the data lives only in memory; the backup is a BGSAVE snapshot of it".into(),
            (_, true) => format!(
                "AOF persistence is on ({}): a restore installs the dump as the AOF's base file",
                self.appenddirname.as_deref().unwrap_or(&self.appendfilename)
            ),
            (false, false) => format!("RDB snapshots (save {})", self.save.trim()),
        }
    }
}

/// The Jones polynomial, reflected: the CRC-64 Redis writes after an RDB's EOF opcode.
const CRC64_POLY: u64 = 0x95ac_9329_ac4b_c9b5;

const fn crc64_table() -> [u64; 256] {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ CRC64_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

static CRC64_TABLE: [u64; 256] = crc64_table();

/// CRC-64/Jones (reflected, init 0, no final xor), as Redis computes it.
pub fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    for b in data {
        crc = CRC64_TABLE[((crc ^ u64::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Checks an RDB stream as it goes by: the `REDIS` magic and a 4-digit
/// version, then at the end the EOF opcode (0xFF) and the CRC-64 of every
/// byte before the checksum (0 when the server had rdbchecksum off).
#[derive(Debug, Clone, Default)]
pub struct RdbCheck {
    head: Vec<u8>,
    /// The last 9 bytes seen: EOF opcode + checksum at the end of the stream.
    tail: Vec<u8>,
    /// CRC of every byte that has left `tail`.
    crc: u64,
    bytes: u64,
}

/// What an RDB check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbVerdict {
    pub ok: bool,
    pub version: Option<u32>,
    pub detail: String,
}

impl RdbCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.head.len() < 9 {
            let need = (9 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..need]);
        }
        self.bytes += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 9 {
            let spill = self.tail.len() - 9;
            self.crc = crc64(self.crc, &self.tail[..spill]);
            self.tail.drain(..spill);
        }
    }

    pub fn finish(&self) -> RdbVerdict {
        let bad = |detail: String| RdbVerdict {
            ok: false,
            version: None,
            detail,
        };
        if self.head.len() < 9 || &self.head[..5] != b"REDIS" {
            return bad("the stream does not start with the RDB magic `REDIS`".into());
        }
        let version = match std::str::from_utf8(&self.head[5..9])
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            Some(v) => v,
            None => return bad("the RDB version after the magic is not 4 digits".into()),
        };
        if self.tail.len() < 9 || self.tail[0] != 0xff {
            return RdbVerdict {
                ok: false,
                version: Some(version),
                detail: format!(
                    "the RDB (version {version}, {} bytes) does not end with the EOF opcode and its checksum: truncated",
                    self.bytes
                ),
            };
        }
        // The checksum covers everything up to and including the EOF opcode.
        let crc = crc64(self.crc, &self.tail[..1]);
        let mut stored = [0u8; 8];
        stored.copy_from_slice(&self.tail[1..9]);
        let stored = u64::from_le_bytes(stored);
        if stored == 0 {
            return RdbVerdict {
                ok: true,
                version: Some(version),
                detail: format!(
                    "RDB version {version}, {} bytes, ends with EOF; no checksum (rdbchecksum off)",
                    self.bytes
                ),
            };
        }
        if stored != crc {
            return RdbVerdict {
                ok: false,
                version: Some(version),
                detail: format!(
                    "RDB version {version}: CRC-64 {crc:016x} of the content differs from the stored {stored:016x}"
                ),
            };
        }
        RdbVerdict {
            ok: true,
            version: Some(version),
            detail: format!(
                "RDB version {version}, {} bytes, CRC-64 {crc:016x} matches",
                self.bytes
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc64_is_redis_jones() {
        // Redis's own test vector (src/crc64.c).
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
    }

    /// A minimal RDB as Redis 7.0 writes an empty database, with its checksum.
    fn rdb(body: &[u8]) -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(body);
        v.push(0xff);
        let crc = crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn rdb_check_accepts_whole_streams_in_any_chunking_and_rejects_damage() {
        let good = rdb(b"\xfa\x09redis-ver\x067.0.15\xfe\x00\xfb\x01\x00\x00\x01k\x01v");
        for size in [1, 2, 7, 9, 10, 4096] {
            let mut c = RdbCheck::default();
            for chunk in good.chunks(size) {
                c.feed(chunk);
            }
            let v = c.finish();
            assert!(v.ok, "{size}: {v:?}");
            assert_eq!(v.version, Some(10));
        }
        let mut flipped = good.clone();
        flipped[12] ^= 1;
        let mut c = RdbCheck::default();
        c.feed(&flipped);
        assert!(!c.finish().ok);
        let mut c = RdbCheck::default();
        c.feed(&good[..good.len() - 3]);
        assert!(!c.finish().ok, "truncated");
        let mut c = RdbCheck::default();
        c.feed(b"PGDMP-not-redis");
        assert!(!c.finish().ok);
        let mut unsummed = good[..good.len() - 8].to_vec();
        unsummed.extend_from_slice(&[0; 8]);
        let mut c = RdbCheck::default();
        c.feed(&unsummed);
        assert!(c.finish().ok, "rdbchecksum off writes 0");
    }

    #[test]
    fn info_and_config_answers_parse() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb5:keys=12,expires=0,avg_ttl=0\r\n";
        let counts = keyspace_counts(info).expect("counts");
        assert_eq!(counts["db0"], 3);
        assert_eq!(counts["db5"], 12);
        assert!(keyspace_counts("# Keyspace\r\n").expect("empty").is_empty());
        assert_eq!(
            info_field(
                "# Persistence\r\nloading:0\r\nrdb_bgsave_in_progress:1\r\n",
                "rdb_bgsave_in_progress"
            )
            .as_deref(),
            Some("1")
        );
        let c = config_pairs("save\n\nappendonly\nno\ndir\n/data\ndbfilename\ndump.rdb\n");
        let p = Persistence::from_config(&c).expect("persistence");
        assert!(p.off());
        assert_eq!(p.dump_path(), "/data/dump.rdb");
        let c = config_pairs("save\n3600 1\nappendonly\nyes\ndir\n/data/\ndbfilename\ndump.rdb\nappenddirname\nappendonlydir\nappendfilename\nappendonly.aof\n");
        let p = Persistence::from_config(&c).expect("persistence");
        assert!(!p.off() && p.appendonly);
        assert_eq!(p.appenddirname.as_deref(), Some("appendonlydir"));
        assert_eq!(p.dir, "/data");
        assert!(Persistence::from_config(&config_pairs("dir\nrelative\n")).is_err());
        assert_eq!(
            error_reply("NOAUTH Authentication required.\n").as_deref(),
            Some("NOAUTH Authentication required.")
        );
        assert_eq!(error_reply("PONG\n"), None);
    }
}
