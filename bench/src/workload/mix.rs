//! The generic op mix of `run`: each request drawn from weighted ops over the key space.
//! Creates go under the scratch parent with names unique to the run; `delete` removes
//! the oldest node this session created, so creates and deletes can balance.

use std::collections::VecDeque;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkeeper::proto::{ReplyHeader, Request, WriteOp};

use super::{create, created_path, EPHEMERAL, SEQUENTIAL};
use crate::engine::{Ctx, Workload};
use crate::keys::{key, KeyDist, SCRATCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Exists,
    Children,
    Set,
    Create,
    Ephemeral,
    Sequential,
    Delete,
    Multi,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Exists => "exists",
            Op::Children => "children",
            Op::Set => "set",
            Op::Create => "create",
            Op::Ephemeral => "ephemeral",
            Op::Sequential => "sequential",
            Op::Delete => "delete",
            Op::Multi => "multi",
        }
    }

    const ALL: [Op; 9] = [
        Op::Get,
        Op::Exists,
        Op::Children,
        Op::Set,
        Op::Create,
        Op::Ephemeral,
        Op::Sequential,
        Op::Delete,
        Op::Multi,
    ];

    pub fn creates(self) -> bool {
        matches!(self, Op::Create | Op::Ephemeral | Op::Sequential)
    }
}

/// `get=90,set=10`: op names and integer weights.
pub fn parse_mix(spec: &str) -> Result<Vec<(Op, u32)>, String> {
    let mut mix = Vec::new();
    for part in spec.split(',') {
        let (name, w) = part
            .split_once('=')
            .ok_or_else(|| format!("--mix: expected op=weight, got {part:?}"))?;
        let op = Op::ALL
            .into_iter()
            .find(|o| o.name() == name)
            .ok_or_else(|| {
                format!(
                    "--mix: unknown op {name:?} (ops: {})",
                    Op::ALL.map(Op::name).join(", ")
                )
            })?;
        let w: u32 = w
            .parse()
            .map_err(|_| format!("--mix: bad weight in {part:?}"))?;
        mix.push((op, w));
    }
    if mix.iter().map(|m| m.1).sum::<u32>() == 0 {
        return Err("--mix: the weights sum to 0".into());
    }
    if mix.iter().any(|&(o, w)| o == Op::Delete && w > 0)
        && !mix.iter().any(|&(o, w)| o.creates() && w > 0)
    {
        return Err(
            "--mix: delete removes nodes the run created; add create, ephemeral or sequential"
                .into(),
        );
    }
    Ok(mix)
}

pub struct Mix {
    prefix: String,
    mix: Vec<(Op, u32)>,
    total: u32,
    keys: KeyDist,
    value: Bytes,
    multi_size: usize,
    rng: StdRng,
    run_id: u32,
    sessions: Vec<SessionState>,
}

#[derive(Default)]
struct SessionState {
    global: usize,
    made: u64,
    /// Nodes this session created (or asked to), oldest first: what `delete` removes.
    created: VecDeque<String>,
}

impl Mix {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        prefix: String,
        mix: Vec<(Op, u32)>,
        keys: KeyDist,
        value_size: usize,
        multi_size: usize,
        seed: u64,
        run_id: u32,
        globals: &[usize],
    ) -> Mix {
        Mix {
            prefix,
            total: mix.iter().map(|m| m.1).sum(),
            mix,
            keys,
            value: Bytes::from(vec![b'w'; value_size]),
            multi_size: multi_size.max(1),
            rng: StdRng::seed_from_u64(seed),
            run_id,
            sessions: globals
                .iter()
                .map(|&g| SessionState {
                    global: g,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn pick(&mut self) -> Op {
        let mut x = self.rng.gen_range(0..self.total);
        for &(op, w) in &self.mix {
            if x < w {
                return op;
            }
            x -= w;
        }
        self.mix[0].0
    }

    fn request(&mut self, s: usize, op: Op) -> Request {
        match op {
            Op::Get => Request::GetData {
                path: key(&self.prefix, self.keys.sample(&mut self.rng)),
                watch: false,
            },
            Op::Exists => Request::Exists {
                path: key(&self.prefix, self.keys.sample(&mut self.rng)),
                watch: false,
            },
            Op::Children => Request::GetChildren {
                path: key(&self.prefix, self.keys.sample(&mut self.rng)),
                watch: false,
            },
            Op::Set => Request::SetData {
                path: key(&self.prefix, self.keys.sample(&mut self.rng)),
                data: Some(self.value.clone()),
                version: -1,
            },
            Op::Create | Op::Ephemeral => {
                let st = &mut self.sessions[s];
                st.made += 1;
                let path = format!("{SCRATCH}/r{:08x}-s{}-{}", self.run_id, st.global, st.made);
                st.created.push_back(path.clone());
                let flags = if op == Op::Ephemeral { EPHEMERAL } else { 0 };
                create(path, self.value.clone(), flags)
            }
            Op::Sequential => create(
                format!("{SCRATCH}/r{:08x}-q-", self.run_id),
                self.value.clone(),
                SEQUENTIAL,
            ),
            Op::Delete => Request::Delete {
                path: self.sessions[s]
                    .created
                    .pop_front()
                    .expect("delete is drawn only when the session created a node"),
                version: -1,
            },
            Op::Multi => Request::Multi(
                (0..self.multi_size)
                    .map(|_| WriteOp::SetData {
                        path: key(&self.prefix, self.keys.sample(&mut self.rng)),
                        data: Some(self.value.clone()),
                        version: -1,
                    })
                    .collect(),
            ),
        }
    }
}

impl Workload for Mix {
    fn next(&mut self, s: usize, _ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        let mut op = self.pick();
        // A delete needs a node this session made: draw again (a create comes soon).
        while op == Op::Delete && self.sessions[s].created.is_empty() {
            op = self.pick();
        }
        Some((op.name(), self.request(s, op)))
    }

    fn on_reply(
        &mut self,
        s: usize,
        op: &'static str,
        h: &ReplyHeader,
        body: &[u8],
        _ctx: &mut Ctx,
    ) {
        if op == Op::Sequential.name() && h.err == 0 {
            if let Some(p) = created_path(body) {
                self.sessions[s].created.push_back(p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_specs() {
        let m = parse_mix("get=90,set=10").unwrap();
        assert_eq!(m, vec![(Op::Get, 90), (Op::Set, 10)]);
        assert!(parse_mix("get=0").is_err());
        assert!(parse_mix("fetch=1").is_err());
        assert!(parse_mix("delete=1,get=1").is_err());
        assert!(parse_mix("delete=1,ephemeral=1").is_ok());
    }
}
