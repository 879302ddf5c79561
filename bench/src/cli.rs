//! Command-line flags: `--name value` pairs and bare switches, read by name and type;
//! a flag no command asked for is an error, so a typo does not silently change a run.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

const SWITCHES: &[&str] = &["--json", "--quiet"];

pub struct Flags {
    values: BTreeMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl Flags {
    pub fn parse(argv: &[String]) -> Result<Flags, String> {
        let mut values = BTreeMap::new();
        let mut i = 0;
        while i < argv.len() {
            let flag = &argv[i];
            if !flag.starts_with("--") {
                return Err(format!("unexpected argument {flag:?}"));
            }
            if SWITCHES.contains(&flag.as_str()) {
                values.insert(flag.clone(), "true".into());
            } else {
                let v = argv
                    .get(i + 1)
                    .ok_or_else(|| format!("{flag} needs a value"))?;
                values.insert(flag.clone(), v.clone());
                i += 1;
            }
            i += 1;
        }
        Ok(Flags {
            values,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    pub fn str(&self, name: &str) -> Option<String> {
        self.used.borrow_mut().insert(name.to_string());
        self.values.get(name).cloned()
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.str(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: cannot read {v:?} as a number")),
        }
    }

    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.str(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name}: cannot read {v:?} as a number")),
        }
    }

    pub fn switch(&self, name: &str) -> bool {
        self.str(name).is_some()
    }

    /// Errors on any flag that the command did not read.
    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        match self.values.keys().find(|k| !used.contains(*k)) {
            Some(k) => Err(format!("unknown argument {k:?} for this command")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(s: &str) -> Flags {
        Flags::parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn values_switches_and_unknown_flags() {
        let f = flags("--keys 10 --json --rate 2.5");
        assert_eq!(f.get("--keys", 0u64).unwrap(), 10);
        assert_eq!(f.opt::<f64>("--rate").unwrap(), Some(2.5));
        assert!(f.switch("--json"));
        assert_eq!(f.get("--depth", 3usize).unwrap(), 3);
        assert!(f.finish().is_ok());
        let f = flags("--keys ten --bogus 1");
        assert!(f.get("--keys", 0u64).is_err());
        assert!(f.finish().unwrap_err().contains("--bogus"));
        assert!(Flags::parse(&["--keys".to_string()]).is_err());
    }
}
