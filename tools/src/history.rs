//! Recorded histories of ZooKeeper operations, checked for linearizability (the
//! search is in `lincheck`).
//!
//! A history is JSON lines, one per operation a client process invoked:
//!
//! ```text
//! {"process": 3, "key": "/reg-1", "op": "cas", "expect": 4, "value": "p3-17",
//!  "invoked": 12.001, "returned": 12.010, "ok": true, "version": 5}
//! ```
//!
//! - `op` is `read` (a sync, then getData: `value`, `version` as read), `cas` (setData
//!   with `expect` as the version: `ok` and the new `version`, or `ok: false` for
//!   BADVERSION), or `create` (a sequential child of `key`: `seq`, its number);
//! - `invoked` / `returned` are one clock's seconds; `returned` is null when the
//!   outcome is unknown (a connection loss): the operation may or may not have taken
//!   effect, at any time after its invocation. A process that lost an answer does not
//!   invoke again (the recorder gives its client a new process number).
//!
//! Linearizability is local, so each key is checked on its own: a register of
//! (value, version) for read/cas, a counter for sequential creates. A key starts as
//! the recorder created it: value "" at version 0, or a parent with no children.

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::lincheck::Verdict;

/// One operation on one key, as the client saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub process: u64,
    pub key: String,
    pub op: Op,
    pub invoked: f64,
    /// When the answer came, with the answer; None: never known.
    pub returned: Option<(f64, Ret)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Read,
    Cas { expect: i64, value: String },
    Create,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ret {
    Read { value: String, version: i64 },
    CasOk { version: i64 },
    BadVersion,
    Created { seq: i64 },
}

/// Reads a history from JSON lines; an error names the line and what is wrong.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_entry(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("no \"{name}\""));
    let int = |name: &str| {
        field(name)?
            .as_i64()
            .ok_or_else(|| format!("\"{name}\" is not an integer"))
    };
    let string = |name: &str| {
        field(name)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("\"{name}\" is not a string"))
    };
    let time = |name: &str| {
        field(name)?
            .as_f64()
            .ok_or_else(|| format!("\"{name}\" is not a number"))
    };
    let op = match string("op")?.as_str() {
        "read" => Op::Read,
        "cas" => Op::Cas {
            expect: int("expect")?,
            value: string("value")?,
        },
        "create" => Op::Create,
        other => return Err(format!("unknown op \"{other}\"")),
    };
    let returned = if field("returned")?.is_null() {
        None
    } else {
        let ret = match op {
            Op::Read => Ret::Read {
                value: string("value")?,
                version: int("version")?,
            },
            Op::Cas { .. } => match field("ok")?.as_bool() {
                Some(true) => Ret::CasOk {
                    version: int("version")?,
                },
                Some(false) => Ret::BadVersion,
                None => return Err("\"ok\" is not a boolean".into()),
            },
            Op::Create => Ret::Created { seq: int("seq")? },
        };
        Some((time("returned")?, ret))
    };
    Ok(Entry {
        process: u64::try_from(int("process")?).map_err(|_| "\"process\" is negative")?,
        key: string("key")?,
        op,
        invoked: time("invoked")?,
        returned,
    })
}

/// What checking one key found.
#[derive(Debug)]
pub struct KeyReport {
    pub key: String,
    pub operations: usize,
    pub unknown: usize,
    pub verdict: Verdict,
}

/// Checks every key of `history` on its own. A history in which a process invoked
/// while its previous operation was in flight (or had been lost) is not one a client
/// can record: every key of it is reported invalid.
pub fn check(history: &[Entry]) -> Vec<KeyReport> {
    let invalid = invalid_process(history);
    let mut by_key: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in history {
        by_key.entry(&e.key).or_default().push(e);
    }
    by_key
        .into_iter()
        .map(|(key, entries)| KeyReport {
            key: key.to_owned(),
            operations: entries.len(),
            unknown: entries.iter().filter(|e| e.returned.is_none()).count(),
            verdict: match &invalid {
                Some(why) => Verdict::Violation(format!("invalid history: {why}")),
                None => crate::lincheck::check(&entries),
            },
        })
        .collect()
}

/// Why the history is not one sequential processes can produce, if it is not.
fn invalid_process(history: &[Entry]) -> Option<String> {
    let mut by_process: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
    for e in history {
        if let Some((t, _)) = &e.returned {
            if *t < e.invoked {
                return Some(format!(
                    "process {}'s operation invoked at {} returned earlier, at {t}",
                    e.process, e.invoked
                ));
            }
        }
        by_process.entry(e.process).or_default().push(e);
    }
    for (process, mut ops) in by_process {
        ops.sort_by(|a, b| a.invoked.total_cmp(&b.invoked));
        for w in ops.windows(2) {
            let busy_until = w[0].returned.as_ref().map_or(f64::INFINITY, |(t, _)| *t);
            if busy_until > w[1].invoked {
                return Some(format!(
                    "process {process} invoked at {} while its operation invoked at {} \
                     was in flight",
                    w[1].invoked, w[0].invoked
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(p: u64, at: (f64, f64), expect: i64, value: &str, ok: Option<i64>) -> Entry {
        Entry {
            process: p,
            key: "/r".into(),
            op: Op::Cas {
                expect,
                value: value.into(),
            },
            invoked: at.0,
            returned: Some((
                at.1,
                ok.map_or(Ret::BadVersion, |version| Ret::CasOk { version }),
            )),
        }
    }

    fn read(p: u64, at: (f64, f64), value: &str, version: i64) -> Entry {
        Entry {
            process: p,
            key: "/r".into(),
            op: Op::Read,
            invoked: at.0,
            returned: Some((
                at.1,
                Ret::Read {
                    value: value.into(),
                    version,
                },
            )),
        }
    }

    fn violations(h: &[Entry]) -> Vec<Option<String>> {
        check(h)
            .into_iter()
            .map(|r| match r.verdict {
                Verdict::Linearizable => None,
                Verdict::Violation(why) => Some(why),
                Verdict::Undecided { limit } => panic!("undecided after {limit} states"),
            })
            .collect()
    }

    #[test]
    fn a_read_after_a_completed_write_that_misses_it_is_caught() {
        // p1's write completes at 2.0; p2's read starts later and sees the old value.
        let h = [
            cas(1, (1.0, 2.0), 0, "a", Some(1)),
            read(2, (3.0, 4.0), "", 0),
        ];
        assert!(violations(&h)[0].is_some());
        // Overlapping the write, the same read is fine: it may come first.
        let h = [
            cas(1, (1.0, 2.0), 0, "a", Some(1)),
            read(2, (1.5, 4.0), "", 0),
        ];
        assert_eq!(violations(&h), [None]);
    }

    #[test]
    fn two_writes_that_both_win_one_version_are_caught() {
        let h = [
            cas(1, (1.0, 2.0), 0, "a", Some(1)),
            cas(2, (1.0, 2.0), 0, "b", Some(1)),
        ];
        assert!(violations(&h)[0].is_some());
        let h = [
            cas(1, (1.0, 2.0), 0, "a", Some(1)),
            cas(2, (1.0, 2.0), 0, "b", None),
        ];
        assert_eq!(violations(&h), [None]);
    }

    #[test]
    fn a_write_with_an_unknown_outcome_may_have_happened_or_not() {
        let mut lost = cas(1, (1.0, 0.0), 0, "a", Some(1));
        lost.returned = None;
        // Seen later by a read, or never seen: both are linearizable.
        let seen = [lost.clone(), read(2, (5.0, 6.0), "a", 1)];
        let unseen = [lost.clone(), read(2, (5.0, 6.0), "", 0)];
        assert_eq!(violations(&seen), [None]);
        assert_eq!(violations(&unseen), [None]);
        // But not seen before it was invoked.
        let early = [lost, read(2, (0.1, 0.5), "a", 1)];
        assert!(violations(&early)[0].is_some());
    }

    #[test]
    fn sequence_numbers_given_twice_or_out_of_order_are_caught() {
        let create = |p, at: (f64, f64), seq| Entry {
            process: p,
            key: "/s".into(),
            op: Op::Create,
            invoked: at.0,
            returned: Some((at.1, Ret::Created { seq })),
        };
        assert_eq!(
            violations(&[create(1, (1.0, 2.0), 0), create(2, (3.0, 4.0), 1)]),
            [None]
        );
        assert!(violations(&[create(1, (1.0, 2.0), 1), create(2, (3.0, 4.0), 0)])[0].is_some());
        assert!(violations(&[create(1, (1.0, 2.0), 0), create(2, (1.5, 4.0), 0)])[0].is_some());
    }

    #[test]
    fn keys_are_checked_each_on_its_own_and_bad_lines_are_named() {
        let text = r#"{"process": 1, "key": "/a", "op": "cas", "expect": 0, "value": "x", "invoked": 1.0, "returned": 2.0, "ok": true, "version": 1}
{"process": 2, "key": "/b", "op": "read", "invoked": 3.0, "returned": 4.0, "value": "", "version": 0}
{"process": 3, "key": "/a", "op": "read", "invoked": 3.0, "returned": null}
"#;
        let h = parse(text).unwrap();
        let reports = check(&h);
        assert_eq!(reports.len(), 2);
        assert_eq!((reports[0].operations, reports[0].unknown), (2, 1));
        assert!(reports.iter().all(|r| r.verdict == Verdict::Linearizable));
        let err = parse("{\"process\": 1, \"key\": \"/a\", \"op\": \"fly\"}").unwrap_err();
        assert!(err.contains("line 1") && err.contains("fly"), "{err}");
    }
}
