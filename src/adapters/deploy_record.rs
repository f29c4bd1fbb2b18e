//! `<state>/deploys.json`: what ran before each service's last deploy or
//! rollback (domain::deploy::DeployRecords), replaced atomically (mode 0600)
//! so a crash leaves the old record or the new one.
use std::path::{Path, PathBuf};

use crate::domain::deploy::DeployRecords;

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("deploys.json")
}

/// The records; a missing file is none. A file that is not a record is an
/// error (it is never silently replaced).
pub fn load(state_dir: &Path) -> std::io::Result<DeployRecords> {
    let p = path(state_dir);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a deploy record: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeployRecords::default()),
        Err(e) => Err(e),
    }
}

pub fn save(state_dir: &Path, records: &DeployRecords) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(records)?;
    bytes.push(b'\n');
    crate::adapters::files::write_atomic(&path(state_dir), &bytes, Some(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::deploy::{ImageRecord, ServiceRecord};

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("empty"), DeployRecords::default());
        let mut r = DeployRecords::default();
        r.services.insert(
            "api".into(),
            ServiceRecord {
                previous: ImageRecord {
                    image: Some("app:1".into()),
                    image_id: "sha256:aa".into(),
                    pin: Some("stackpilot-rollback/p-api:aa".into()),
                },
                current: ImageRecord::default(),
                at: "2026-11-28T08:00:00Z".into(),
                by: "deploy".into(),
                outcome: "deployed".into(),
            },
        );
        save(dir.path(), &r).expect("save");
        assert_eq!(load(dir.path()).expect("load"), r);
        std::fs::write(path(dir.path()), "nope").expect("write");
        assert!(load(dir.path()).is_err());
    }
}
