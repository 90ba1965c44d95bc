//! What to do so that Home Assistant has exactly one Generic Camera entry per camera: a pure
//! function of the cameras wanted, what Vigil remembers having made, and the entries Home
//! Assistant lists now. No I/O here.
//!
//! An entry is Vigil's when Vigil remembers its id (the record under the data directory) or,
//! with no record (a wiped data directory, a reinstall), when its title is Vigil's
//! ([`entry_title`]). An entry whose `modified_at` moved since Vigil last changed it was
//! edited by the user: Vigil lets it go and never touches it, nor makes another for its camera.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The title Vigil gives its entry for `camera`, and so the camera entity's name.
pub fn entry_title(camera: &str) -> String {
    format!("{camera} (Vigil)")
}

/// One Generic Camera entry as Home Assistant lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    pub entry_id: String,
    #[serde(default)]
    pub title: String,
    /// Seconds since the epoch of the entry's last change (options, title).
    #[serde(default)]
    pub modified_at: f64,
}

/// What Vigil remembers about one camera's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub entry_id: String,
    /// The entry's `modified_at` right after Vigil's last change.
    pub modified_at: f64,
    /// A digest of the settings Vigil gave it (URLs, credentials), `None` when adopted.
    pub fingerprint: Option<String>,
    /// True once the user edited it: left alone for good.
    #[serde(default)]
    pub released: bool,
}

/// Every camera's record, kept as JSON under the data directory.
pub type Records = BTreeMap<String, Record>;

/// One step towards one entry per camera.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// No entry for this camera yet: run Home Assistant's config flow.
    Create { camera: String },
    /// Vigil's entry with settings that are not (or not known to be) the wanted ones: run the
    /// options flow. Also how an entry found by its title is adopted.
    Update { camera: String, entry_id: String },
    /// Vigil's entry for a camera no longer wanted.
    Delete { camera: String, entry_id: String },
    /// The user edited this entry: forget managing it, keep it.
    Release { camera: String, entry_id: String },
    /// The record's entry is gone (the user deleted it): forget it.
    Forget { camera: String },
}

/// The actions for `wanted` (camera → fingerprint of its settings; empty when the option is
/// off), given `records` and the `entries` Home Assistant has now.
pub fn plan(
    wanted: &BTreeMap<String, String>,
    records: &Records,
    entries: &[Entry],
) -> Vec<Action> {
    let mut actions = Vec::new();
    let by_id: BTreeMap<&str, &Entry> = entries.iter().map(|e| (e.entry_id.as_str(), e)).collect();
    // Cameras whose entry exists (managed or the user's): no new entry for them.
    let mut covered: Vec<&str> = Vec::new();
    for (camera, record) in records {
        let Some(entry) = by_id.get(record.entry_id.as_str()) else {
            actions.push(Action::Forget {
                camera: camera.clone(),
            });
            continue;
        };
        covered.push(camera);
        if record.released {
            continue;
        }
        if entry.modified_at != record.modified_at {
            actions.push(Action::Release {
                camera: camera.clone(),
                entry_id: record.entry_id.clone(),
            });
            continue;
        }
        match wanted.get(camera) {
            None => actions.push(Action::Delete {
                camera: camera.clone(),
                entry_id: record.entry_id.clone(),
            }),
            Some(fingerprint) if record.fingerprint.as_ref() != Some(fingerprint) => {
                actions.push(Action::Update {
                    camera: camera.clone(),
                    entry_id: record.entry_id.clone(),
                })
            }
            Some(_) => {}
        }
    }
    let recorded: Vec<&str> = records.values().map(|r| r.entry_id.as_str()).collect();
    for camera in wanted.keys() {
        if covered.contains(&camera.as_str()) {
            continue;
        }
        let titled = entries
            .iter()
            .find(|e| e.title == entry_title(camera) && !recorded.contains(&e.entry_id.as_str()));
        actions.push(match titled {
            Some(entry) => Action::Update {
                camera: camera.clone(),
                entry_id: entry.entry_id.clone(),
            },
            None => Action::Create {
                camera: camera.clone(),
            },
        });
    }
    // Vigil's entries by title (no record) for cameras no longer wanted.
    for entry in entries {
        if recorded.contains(&entry.entry_id.as_str()) {
            continue;
        }
        let camera = entry
            .title
            .strip_suffix(" (Vigil)")
            .filter(|c| !c.is_empty() && !wanted.contains_key(*c) && !records.contains_key(*c));
        if let Some(camera) = camera {
            actions.push(Action::Delete {
                camera: camera.to_string(),
                entry_id: entry.entry_id.clone(),
            });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, title: &str, modified_at: f64) -> Entry {
        Entry {
            entry_id: id.into(),
            title: title.into(),
            modified_at,
        }
    }

    fn record(id: &str, modified_at: f64, fingerprint: &str) -> Record {
        Record {
            entry_id: id.into(),
            modified_at,
            fingerprint: Some(fingerprint.into()),
            released: false,
        }
    }

    fn check(
        wanted: &[(&str, &str)],
        records: &[(&str, Record)],
        entries: &[Entry],
        expected: &[Action],
    ) {
        let wanted = wanted
            .iter()
            .map(|(c, f)| (c.to_string(), f.to_string()))
            .collect();
        let records = records
            .iter()
            .map(|(c, r)| (c.to_string(), r.clone()))
            .collect();
        assert_eq!(plan(&wanted, &records, entries), expected);
    }

    fn create(camera: &str) -> Action {
        Action::Create {
            camera: camera.into(),
        }
    }

    #[test]
    fn new_cameras_get_an_entry_and_existing_ones_none_again() {
        check(
            &[("nursery", "f1"), ("attic", "f2")],
            &[],
            &[],
            &[create("attic"), create("nursery")],
        );
        // After a restart: the same entry, nothing to do; the user's own cameras untouched.
        check(
            &[("nursery", "f1")],
            &[("nursery", record("e1", 10.0, "f1"))],
            &[
                entry("e1", "nursery (Vigil)", 10.0),
                entry("e9", "192_168_1_20", 3.0),
            ],
            &[],
        );
    }

    #[test]
    fn changed_settings_update_the_entry() {
        check(
            &[("nursery", "f2")],
            &[("nursery", record("e1", 10.0, "f1"))],
            &[entry("e1", "nursery (Vigil)", 10.0)],
            &[Action::Update {
                camera: "nursery".into(),
                entry_id: "e1".into(),
            }],
        );
    }

    #[test]
    fn a_user_edited_entry_is_released_and_never_duplicated() {
        let edited = [entry("e1", "Baby room", 42.0)];
        check(
            &[("nursery", "f1")],
            &[("nursery", record("e1", 10.0, "f1"))],
            &edited,
            &[Action::Release {
                camera: "nursery".into(),
                entry_id: "e1".into(),
            }],
        );
        let mut released = record("e1", 10.0, "f1");
        released.released = true;
        // Released: kept even when the camera is removed, and no second entry.
        check(
            &[("nursery", "f1")],
            &[("nursery", released.clone())],
            &edited,
            &[],
        );
        check(&[], &[("nursery", released.clone())], &edited, &[]);
        // Deleted by the user later: forgotten, and made again while wanted.
        check(
            &[("nursery", "f1")],
            &[("nursery", released)],
            &[],
            &[
                Action::Forget {
                    camera: "nursery".into(),
                },
                create("nursery"),
            ],
        );
    }

    #[test]
    fn removed_cameras_lose_their_entry() {
        check(
            &[("nursery", "f1")],
            &[
                ("nursery", record("e1", 10.0, "f1")),
                ("attic", record("e2", 11.0, "f2")),
            ],
            &[
                entry("e1", "nursery (Vigil)", 10.0),
                entry("e2", "attic (Vigil)", 11.0),
            ],
            &[Action::Delete {
                camera: "attic".into(),
                entry_id: "e2".into(),
            }],
        );
        // The option turned off: every entry of Vigil's goes.
        check(
            &[],
            &[("nursery", record("e1", 10.0, "f1"))],
            &[entry("e1", "nursery (Vigil)", 10.0)],
            &[Action::Delete {
                camera: "nursery".into(),
                entry_id: "e1".into(),
            }],
        );
    }

    #[test]
    fn without_records_entries_are_found_by_their_title() {
        check(
            &[("nursery", "f1")],
            &[],
            &[
                entry("e1", "nursery (Vigil)", 10.0),
                entry("e2", "attic (Vigil)", 11.0),
                entry("e3", "garden", 1.0),
            ],
            &[
                Action::Update {
                    camera: "nursery".into(),
                    entry_id: "e1".into(),
                },
                Action::Delete {
                    camera: "attic".into(),
                    entry_id: "e2".into(),
                },
            ],
        );
    }
}
