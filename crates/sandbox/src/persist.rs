//! The state file: the whole [`Db`] as JSON, written atomically.
//!
//! Atomic write: a temp file next to the target, `fsync`, rename over the target, then
//! `fsync` of the directory, so a crash leaves either the old or the new file, never a torn
//! one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::SandboxError;
use crate::model::Db;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    db: Db,
    /// The webhook hub's own snapshot (`Hub::export_state`).
    #[serde(default)]
    webhooks: Option<serde_json::Value>,
}

/// Loads the state file (data and webhook snapshot); `Ok(None)` when it does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<(Db, Option<serde_json::Value>)>, SandboxError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SandboxError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let file: StateFile =
        serde_json::from_slice(&bytes).map_err(|source| SandboxError::StateFile {
            path: path.to_owned(),
            source,
        })?;
    if file.version != VERSION {
        return Err(SandboxError::StateVersion {
            path: path.to_owned(),
            version: file.version,
        });
    }
    Ok(Some((file.db, file.webhooks)))
}

/// Writes the state file atomically.
pub(crate) fn save(path: &Path, db: Db, webhooks: serde_json::Value) -> Result<(), SandboxError> {
    let io = |source| SandboxError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let bytes = serde_json::to_vec(&StateFile {
        version: VERSION,
        db,
        webhooks: Some(webhooks),
    })
    .map_err(|source| SandboxError::StateFile {
        path: path.to_owned(),
        source,
    })?;
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    // Make the rename durable; some platforms cannot open directories, which is fine.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
