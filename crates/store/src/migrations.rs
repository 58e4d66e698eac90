//! Versioned schema migrations, one ordered list per backend.
//!
//! Each migration is an SQL file `migrations/<backend>/NNNN_name.sql`, embedded at compile time.
//! Applied versions are recorded in `schema_migrations` (version, name, applied_at). Opening a
//! store applies what is missing in one transaction (on PostgreSQL under an advisory lock, so
//! instances starting together do not race), and refuses a database
//! that records a version this build does not know (a newer binary migrated it) or a version
//! whose name differs (the files were edited after release).

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version, from the file name's number.
    pub version: u32,
    /// Name, from the file name after the number.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// SQLite migrations, in order.
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "drop_unused_trigger_index",
        sql: include_str!("../migrations/sqlite/0002_drop_unused_trigger_index.sql"),
    },
    Migration {
        version: 3,
        name: "entity_state_by_reference",
        sql: include_str!("../migrations/sqlite/0003_entity_state_by_reference.sql"),
    },
];

/// PostgreSQL migrations, in order.
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "drop_unused_trigger_index",
        sql: include_str!("../migrations/postgres/0002_drop_unused_trigger_index.sql"),
    },
    Migration {
        version: 3,
        name: "entity_state_text",
        sql: include_str!("../migrations/postgres/0003_entity_state_text.sql"),
    },
    Migration {
        version: 4,
        name: "entity_state_version",
        sql: include_str!("../migrations/postgres/0004_entity_state_version.sql"),
    },
];

/// Compares what a database records with what this build embeds; returns the migrations to apply.
pub(crate) fn pending<'a>(
    known: &'a [Migration],
    applied: &[(u32, String)],
) -> Result<Vec<&'a Migration>, crate::StoreError> {
    for (version, name) in applied {
        match known.iter().find(|m| m.version == *version) {
            Some(m) if m.name == name => {}
            Some(m) => {
                return Err(crate::StoreError::Migration {
                    version: *version,
                    message: format!(
                        "database records name {name:?}, this build has {:?}",
                        m.name
                    ),
                    source: None,
                });
            }
            None => {
                return Err(crate::StoreError::Migration {
                    version: *version,
                    message: "database was migrated by a newer build".into(),
                    source: None,
                });
            }
        }
    }
    Ok(known
        .iter()
        .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `migrations/<backend>/` is listed, in order, with matching version and name,
    /// so a new file cannot be forgotten in the embedded list.
    fn check(backend: &str, list: &[Migration]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend);
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("migrations dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let expected: Vec<String> = list
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, expected, "{backend} migrations out of sync");
        for (i, m) in list.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "versions are 1, 2, 3, ...");
            let on_disk = std::fs::read_to_string(dir.join(&expected[i])).expect("read");
            assert_eq!(on_disk, m.sql);
        }
    }

    #[test]
    fn embedded_lists_match_files() {
        check("sqlite", SQLITE);
        check("postgres", POSTGRES);
    }

    #[test]
    fn pending_refuses_unknown_and_renamed_versions() {
        assert_eq!(pending(SQLITE, &[]).expect("fresh").len(), SQLITE.len());
        let after_first: Vec<u32> = pending(SQLITE, &[(1, "init".into())])
            .expect("one behind")
            .iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(after_first, vec![2, 3], "only what is missing is applied");
        let applied: Vec<(u32, String)> = SQLITE
            .iter()
            .map(|m| (m.version, m.name.to_owned()))
            .collect();
        assert!(pending(SQLITE, &applied).expect("current").is_empty());
        assert!(pending(SQLITE, &[(1, "other".into())]).is_err());
        assert!(pending(SQLITE, &[(1, "init".into()), (999, "future".into())]).is_err());
    }
}
