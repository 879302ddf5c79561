//! The linearizability search over one key's operations: Wing and Gong's algorithm
//! with Lowe's memoization (the one Porcupine runs), on the znode model of
//! `history`.
//!
//! Events (invocations and returns) sit in one list in real-time order. From the
//! list's head, the search linearizes the first operation it can (the model gives
//! its recorded answer), takes its events out of the list and starts again from the
//! head; when it reaches the return of an operation it has not placed, nothing later
//! can go first, so it undoes its last choice and tries the next one. A (set of
//! placed operations, model state) pair it has been in before is not explored twice,
//! which is what keeps a history of thousands of operations in milliseconds.
//!
//! Operations whose outcome is unknown (a connection loss) have no return: they may
//! take effect at any time after their invocation, or never. Two rules keep them from
//! multiplying the search:
//! - one is only placed where it changes the model's state: a read, or a set whose
//!   version does not match, has no effect, so placing it equals leaving it out;
//! - unknown sequential creates are alike except for their invocation: any that can
//!   go at a point can stand for the others, so only the first in the list is tried.

use std::collections::{HashMap, HashSet};

use crate::history::{Entry, Op, Ret};

/// What the search found for one key.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Linearizable,
    /// No order fits; says how far the search got and which operation it could not
    /// place.
    Violation(String),
    /// The search visited `limit` states without an answer.
    Undecided {
        limit: usize,
    },
}

/// How many distinct states the search may visit for one key before it gives up.
pub const STATE_LIMIT: usize = 20_000_000;

/// The model's state: a versioned register and a sequence counter.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct State {
    version: i64,
    /// Index into the key's interned values.
    value: u32,
    next_seq: i64,
}

/// One operation, its values interned.
struct Operation {
    call: Op2,
    /// None: unknown outcome.
    ret: Option<Ret2>,
}

#[derive(Clone, Copy)]
enum Op2 {
    Read,
    Cas { expect: i64, value: u32 },
    Create,
}

#[derive(Clone, Copy, PartialEq)]
enum Ret2 {
    Read { value: u32, version: i64 },
    CasOk { version: i64 },
    BadVersion,
    Created { seq: i64 },
}

impl Op2 {
    /// `op` with its value interned by `id`.
    fn of<'a>(op: &'a Op, id: &mut impl FnMut(&'a str) -> u32) -> Op2 {
        match op {
            Op::Read => Op2::Read,
            Op::Cas { expect, value } => Op2::Cas {
                expect: *expect,
                value: id(value),
            },
            Op::Create => Op2::Create,
        }
    }

    fn apply(self, s: State) -> (Ret2, State) {
        match self {
            Op2::Read => (
                Ret2::Read {
                    value: s.value,
                    version: s.version,
                },
                s,
            ),
            Op2::Cas { expect, value } if expect == s.version => {
                let version = s.version + 1;
                (
                    Ret2::CasOk { version },
                    State {
                        version,
                        value,
                        ..s
                    },
                )
            }
            Op2::Cas { .. } => (Ret2::BadVersion, s),
            Op2::Create => (
                Ret2::Created { seq: s.next_seq },
                State {
                    next_seq: s.next_seq + 1,
                    ..s
                },
            ),
        }
    }
}

impl Ret2 {
    /// `ret` with its value interned by `id`.
    fn of<'a>(ret: &'a Ret, id: &mut impl FnMut(&'a str) -> u32) -> Ret2 {
        match ret {
            Ret::Read { value, version } => Ret2::Read {
                value: id(value),
                version: *version,
            },
            Ret::CasOk { version } => Ret2::CasOk { version: *version },
            Ret::BadVersion => Ret2::BadVersion,
            Ret::Created { seq } => Ret2::Created { seq: *seq },
        }
    }
}

impl Operation {
    /// The state after this operation at `s`, if it may be placed there.
    fn step(&self, s: State) -> Option<State> {
        let (ret, next) = self.call.apply(s);
        match self.ret {
            Some(recorded) => (recorded == ret).then_some(next),
            None => (next != s).then_some(next),
        }
    }

    fn is_unknown_create(&self) -> bool {
        self.ret.is_none() && matches!(self.call, Op2::Create)
    }
}

const END: usize = usize::MAX;

/// The event list: a doubly linked list over events sorted by time, with a head
/// sentinel; events are unlinked and relinked in LIFO order (dancing links).
struct Events {
    /// Per event: the operation and whether it is the invocation.
    of: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl Events {
    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != END {
            self.prev[n] = e;
        }
    }
}

/// Checks one key's operations, which must come from a valid history (see
/// `history::check`).
pub fn check(entries: &[&Entry]) -> Verdict {
    check_with_limit(entries, STATE_LIMIT)
}

pub(crate) fn check_with_limit(entries: &[&Entry], limit: usize) -> Verdict {
    let mut values: HashMap<&str, u32> = HashMap::from([("", 0)]);
    let mut intern = |v| {
        let next = values.len() as u32;
        *values.entry(v).or_insert(next)
    };
    let ops: Vec<Operation> = entries
        .iter()
        .map(|e| Operation {
            call: Op2::of(&e.op, &mut intern),
            ret: e.returned.as_ref().map(|(_, r)| Ret2::of(r, &mut intern)),
        })
        .collect();

    // Invocations and returns in real-time order; at the same instant invocations go
    // first: operations that meet at one instant are concurrent (no clock orders
    // them), and an operation's own return never precedes its invocation.
    let mut timed: Vec<(f64, bool, usize)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        timed.push((e.invoked, true, i));
        if let Some((t, _)) = &e.returned {
            timed.push((*t, false, i));
        }
    }
    timed.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)));
    let n = timed.len();
    let head = n;
    let mut events = Events {
        of: timed.iter().map(|&(_, call, op)| (op, call)).collect(),
        next: (1..=n).map(|i| if i == n { END } else { i }).collect(),
        prev: (0..n).map(|i| if i == 0 { head } else { i - 1 }).collect(),
    };
    events.next.push(if n == 0 { END } else { 0 });
    events.prev.push(END);
    let mut return_of = vec![None; ops.len()];
    for (e, &(op, call)) in events.of.iter().enumerate() {
        if !call {
            return_of[op] = Some(e);
        }
    }

    let known = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut placed_known = 0;
    let mut placed = vec![0u64; ops.len().div_ceil(64)];
    let mut state = State {
        version: 0,
        value: 0,
        next_seq: 0,
    };
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    // Per choice: the invocation event placed, the state before it, and whether an
    // unknown create came before it in the list.
    let mut stack: Vec<(usize, State, bool)> = Vec::new();
    // The deepest the search got, and the operation it could not place there.
    let mut deepest = (0usize, None::<usize>);

    let mut e = events.next[head];
    let mut unknown_create_before = false;
    while placed_known < known {
        // An unplaced known operation's return is still in the list, and the scan
        // stops there, so it never runs off the end.
        assert_ne!(e, END, "the scan passed an unplaced operation's return");
        let (op, is_call) = events.of[e];
        if is_call {
            let o = &ops[op];
            let skip = o.is_unknown_create() && unknown_create_before;
            if !skip {
                if let Some(next_state) = o.step(state) {
                    placed[op / 64] |= 1 << (op % 64);
                    if seen.insert((placed.clone(), next_state)) {
                        if seen.len() >= limit {
                            return Verdict::Undecided { limit };
                        }
                        stack.push((e, state, unknown_create_before));
                        state = next_state;
                        events.unlink(e);
                        if let Some(r) = return_of[op] {
                            events.unlink(r);
                        }
                        if o.ret.is_some() {
                            placed_known += 1;
                        }
                        e = events.next[head];
                        unknown_create_before = false;
                        continue;
                    }
                    placed[op / 64] &= !(1 << (op % 64));
                }
            }
            unknown_create_before |= o.is_unknown_create();
            e = events.next[e];
        } else {
            // The return of an operation not placed yet: undo the last choice.
            if placed_known >= deepest.0 {
                deepest = (placed_known, Some(op));
            }
            let Some((c, before, flag)) = stack.pop() else {
                return violation(entries, known, deepest);
            };
            let undone = events.of[c].0;
            if let Some(r) = return_of[undone] {
                events.relink(r);
            }
            events.relink(c);
            placed[undone / 64] &= !(1 << (undone % 64));
            if ops[undone].ret.is_some() {
                placed_known -= 1;
            }
            state = before;
            unknown_create_before = flag || ops[undone].is_unknown_create();
            e = events.next[c];
        }
    }
    Verdict::Linearizable
}

fn violation(entries: &[&Entry], known: usize, deepest: (usize, Option<usize>)) -> Verdict {
    let stuck = deepest.1.map(|i| entries[i]);
    let what = match stuck {
        Some(e) => format!(
            "; the search got no further than {} of {known} answered operations, and could \
             not place process {}'s {:?} invoked at {} with answer {:?}",
            deepest.0,
            e.process,
            e.op,
            e.invoked,
            e.returned.as_ref().map(|(_, r)| r)
        ),
        None => String::new(),
    };
    Verdict::Violation(format!(
        "no sequential order of these operations gives their answers{what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, searched without any of the checker's shortcuts: some order of
    /// all answered operations and any subset of the unknown ones, each after every
    /// operation that returned before it was invoked, gives every recorded answer.
    fn brute_force(entries: &[Entry]) -> bool {
        fn search(entries: &[Entry], left: &mut Vec<usize>, s: State, values: &[&str]) -> bool {
            if left.iter().all(|&i| entries[i].returned.is_none()) {
                return true;
            }
            for k in 0..left.len() {
                let i = left[k];
                let e = &entries[i];
                let blocked = left.iter().any(|&j| {
                    j != i
                        && entries[j]
                            .returned
                            .as_ref()
                            .is_some_and(|(t, _)| *t < e.invoked)
                });
                if blocked {
                    continue;
                }
                let mut id = |v: &str| values.iter().position(|x| *x == v).unwrap() as u32;
                let (ret, next) = Op2::of(&e.op, &mut id).apply(s);
                let fits = match &e.returned {
                    None => true,
                    Some((_, r)) => Ret2::of(r, &mut id) == ret,
                };
                if fits {
                    left.remove(k);
                    let ok = search(entries, left, next, values);
                    left.insert(k, i);
                    if ok {
                        return true;
                    }
                }
            }
            false
        }
        let mut values = vec!["", "a", "b", "c"];
        for e in entries {
            if let Op::Cas { value, .. } = &e.op {
                if !values.contains(&value.as_str()) {
                    values.push(value);
                }
            }
        }
        let mut left: Vec<usize> = (0..entries.len()).collect();
        let s = State {
            version: 0,
            value: 0,
            next_seq: 0,
        };
        search(entries, &mut left, s, &values)
    }

    fn small_entry() -> impl Strategy<Value = Entry> {
        let value = prop::sample::select(vec!["", "a", "b", "c"]);
        let op = prop_oneof![
            Just(Op::Read),
            (0i64..3, value.clone()).prop_map(|(expect, v)| Op::Cas {
                expect,
                value: v.to_owned()
            }),
            Just(Op::Create),
        ];
        let ret = prop_oneof![
            (value, 0i64..3).prop_map(|(v, version)| Ret::Read {
                value: v.to_owned(),
                version
            }),
            (1i64..4).prop_map(|version| Ret::CasOk { version }),
            Just(Ret::BadVersion),
            (0i64..3).prop_map(|seq| Ret::Created { seq }),
        ];
        (op, 0u8..10, 0u8..5, prop::option::weighted(0.8, ret)).prop_map(|(op, at, length, ret)| {
            // An answer of the operation's own kind; a mismatched draw is unknown.
            let ret = ret.filter(|r| {
                matches!(
                    (&op, r),
                    (Op::Read, Ret::Read { .. })
                        | (Op::Cas { .. }, Ret::CasOk { .. } | Ret::BadVersion)
                        | (Op::Create, Ret::Created { .. })
                )
            });
            Entry {
                process: 0,
                key: "/k".into(),
                op,
                invoked: f64::from(at),
                returned: ret.map(|r| (f64::from(at + length), r)),
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// On small histories the search agrees with the definition, both ways.
        #[test]
        fn agrees_with_the_definition(mut h in prop::collection::vec(small_entry(), 1..7)) {
            for (i, e) in h.iter_mut().enumerate() {
                e.process = i as u64;
            }
            let refs: Vec<&Entry> = h.iter().collect();
            let expected = brute_force(&h);
            prop_assert_eq!(check(&refs) == Verdict::Linearizable, expected, "{:?}", h);
        }
    }

    /// A history like the recorder's, generated from a real execution: processes
    /// invoke one operation at a time, each takes effect at a point between its
    /// invocation and its return; an operation with a lost answer took effect or not,
    /// and its process retires.
    fn execution(seed: u64, operations: usize, threads: usize) -> Vec<Entry> {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut draw = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        // (time, kind: 0 effect, 1 return, 2 invoke, thread, entry)
        let mut queue: std::collections::BinaryHeap<std::cmp::Reverse<(u64, u8, usize, usize)>> =
            (0..threads)
                .map(|t| std::cmp::Reverse((draw(10), 2, t, 0)))
                .collect();
        let mut out: Vec<Entry> = Vec::new();
        let mut process = vec![0u64; threads];
        let mut next_process = threads as u64;
        for (t, p) in process.iter_mut().enumerate() {
            *p = t as u64;
        }
        let mut known = vec![0i64; threads];
        let mut results: Vec<Option<Ret>> = Vec::new();
        let (mut version, mut value, mut seq) = (0i64, String::new(), 0i64);
        let mut is_register = vec![true; 0];
        while let Some(std::cmp::Reverse((now, kind, t, i))) = queue.pop() {
            match kind {
                2 if out.len() < operations => {
                    let register = draw(3) != 0;
                    let op = if !register {
                        Op::Create
                    } else if draw(2) == 0 {
                        Op::Read
                    } else {
                        Op::Cas {
                            expect: known[t],
                            value: format!("v{}", out.len()),
                        }
                    };
                    let lost = draw(10) == 0;
                    let effect = now + draw(50);
                    let i = out.len();
                    out.push(Entry {
                        process: process[t],
                        key: if register { "/r" } else { "/s" }.into(),
                        op,
                        invoked: now as f64,
                        returned: None,
                    });
                    results.push(None);
                    is_register.push(register);
                    if !lost || draw(2) == 0 {
                        queue.push(std::cmp::Reverse((effect, 0, t, i)));
                    }
                    if lost {
                        process[t] = next_process;
                        next_process += 1;
                        queue.push(std::cmp::Reverse((effect + draw(100), 2, t, 0)));
                    } else {
                        queue.push(std::cmp::Reverse((effect + draw(50), 1, t, i)));
                    }
                }
                0 => {
                    let r = match &out[i].op {
                        Op::Read => Ret::Read {
                            value: value.clone(),
                            version,
                        },
                        Op::Cas { expect, value: v } if *expect == version => {
                            version += 1;
                            value = v.clone();
                            Ret::CasOk { version }
                        }
                        Op::Cas { .. } => Ret::BadVersion,
                        Op::Create => {
                            seq += 1;
                            Ret::Created { seq: seq - 1 }
                        }
                    };
                    results[i] = Some(r);
                }
                1 => {
                    let r = results[i]
                        .clone()
                        .expect("the effect comes before the return");
                    if let Ret::Read { version, .. } | Ret::CasOk { version } = &r {
                        known[t] = *version;
                    }
                    out[i].returned = Some((now as f64, r));
                    queue.push(std::cmp::Reverse((now + draw(5), 2, t, 0)));
                }
                _ => {}
            }
        }
        out
    }

    fn verdicts(h: &[Entry]) -> Vec<Verdict> {
        crate::history::check(h)
            .into_iter()
            .map(|r| r.verdict)
            .collect()
    }

    #[test]
    fn long_executions_with_lost_answers_are_decided_and_linearizable() {
        for seed in 1..=20 {
            let h = execution(seed, 4000, 6);
            assert!(h.iter().filter(|e| e.returned.is_none()).count() > 100);
            let by_key: Vec<&Entry> = h.iter().filter(|e| e.key == "/r").collect();
            assert_eq!(
                check_with_limit(&by_key, 200_000),
                Verdict::Linearizable,
                "seed {seed}"
            );
            assert_eq!(
                check_with_limit(&by_key, 10),
                Verdict::Undecided { limit: 10 }
            );
            assert_eq!(verdicts(&h), [Verdict::Linearizable, Verdict::Linearizable]);
        }
    }

    #[test]
    fn a_long_execution_with_one_answer_changed_is_caught() {
        for seed in 1..=20 {
            let mut h = execution(seed, 4000, 6);
            // Two writes that both won one version.
            let wins: Vec<usize> = (0..h.len())
                .filter(|&i| matches!(h[i].returned, Some((_, Ret::CasOk { .. }))))
                .collect();
            let (a, b) = (wins[wins.len() / 2], wins[wins.len() / 2 + 1]);
            let Some((_, Ret::CasOk { version })) = h[a].returned.clone() else {
                unreachable!()
            };
            h[b].returned.as_mut().unwrap().1 = Ret::CasOk { version };
            let v = verdicts(&h);
            assert!(matches!(v[0], Verdict::Violation(_)), "seed {seed}: {v:?}");
            assert_eq!(v[1], Verdict::Linearizable);
            // A sequence number given twice.
            let mut h = execution(seed, 4000, 6);
            let made: Vec<usize> = (0..h.len())
                .filter(|&i| matches!(h[i].returned, Some((_, Ret::Created { .. }))))
                .collect();
            let (a, b) = (made[made.len() / 2], made[made.len() / 2 + 1]);
            let seq = h[a].returned.clone().unwrap().1;
            h[b].returned.as_mut().unwrap().1 = seq;
            let v = verdicts(&h);
            assert_eq!(v[0], Verdict::Linearizable);
            assert!(matches!(v[1], Verdict::Violation(_)), "seed {seed}: {v:?}");
        }
    }
}
