//! Service discovery: a /services tree of services, each with instances registered as
//! ephemeral znodes. Registrar sessions (the first `registrars`) register their share of
//! instances, then churn: deregister their oldest instance and register a new one,
//! `churn` times a second over all registrars. Every other session is a reader:
//! getChildren of a service with a watch, then getData of one instance with a watch, and
//! again — as a discovery client refreshing its view does.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkeeper::proto::{ReplyHeader, Request, WatcherEvent};

use super::{children, create, EPHEMERAL};
use crate::engine::{Ctx, Workload};

pub const ROOT: &str = "/services";

pub fn service_path(j: usize) -> String {
    format!("{ROOT}/svc-{j:04}")
}

#[derive(Clone)]
pub struct Params {
    pub services: usize,
    pub instances: usize,
    pub registrars: usize,
    pub churn_per_s: f64,
    pub value_size: usize,
    pub run_id: u32,
}

enum Role {
    Registrar {
        own: VecDeque<String>,
        made: u64,
        target: usize,
        create_next: bool,
        next_churn: Option<Instant>,
    },
    Reader {
        get_next: Option<String>,
        /// The service of the last getChildren.
        service: usize,
    },
}

pub struct Discovery {
    p: Params,
    value: Bytes,
    rng: StdRng,
    roles: Vec<(usize, Role)>,
    notifications: u64,
}

impl Discovery {
    pub fn new(p: Params, seed: u64, globals: &[usize]) -> Discovery {
        let registrars = p.registrars.max(1);
        let total = p.services * p.instances;
        let roles = globals
            .iter()
            .map(|&g| {
                let role = if g < registrars {
                    Role::Registrar {
                        own: VecDeque::new(),
                        made: 0,
                        // This registrar's share of the initial instances.
                        target: total / registrars + usize::from(g < total % registrars),
                        create_next: false,
                        next_churn: None,
                    }
                } else {
                    Role::Reader {
                        get_next: None,
                        service: 0,
                    }
                };
                (g, role)
            })
            .collect();
        Discovery {
            value: Bytes::from(vec![b'i'; p.value_size]),
            p,
            rng: StdRng::seed_from_u64(seed),
            roles,
            notifications: 0,
        }
    }
}

impl Workload for Discovery {
    fn next(&mut self, s: usize, ctx: &mut Ctx) -> Option<(&'static str, Request)> {
        let services = self.p.services.max(1);
        let (g, role) = &mut self.roles[s];
        match role {
            Role::Registrar {
                own,
                made,
                target,
                create_next,
                next_churn,
            } => {
                let register = *create_next || own.len() < *target;
                if !register {
                    if self.p.churn_per_s <= 0.0 {
                        return None;
                    }
                    let iv = Duration::from_secs_f64(
                        self.p.registrars.max(1) as f64 / self.p.churn_per_s,
                    );
                    let due = *next_churn.get_or_insert(ctx.now + iv);
                    if ctx.now < due {
                        ctx.wake_at(s, due);
                        return None;
                    }
                    *next_churn = Some(due + iv);
                    *create_next = true;
                    let path = own.pop_front()?;
                    return Some(("deregister", Request::Delete { path, version: -1 }));
                }
                *create_next = false;
                *made += 1;
                let svc = (*g + *made as usize * self.p.registrars.max(1)) % services;
                let path = format!(
                    "{}/inst-{:08x}-{}-{}",
                    service_path(svc),
                    self.p.run_id,
                    g,
                    made
                );
                own.push_back(path.clone());
                Some(("register", create(path, self.value.clone(), EPHEMERAL)))
            }
            Role::Reader { get_next, service } => Some(match get_next.take() {
                Some(path) => ("get", Request::GetData { path, watch: true }),
                None => {
                    *service = self.rng.gen_range(0..services);
                    (
                        "children",
                        Request::GetChildren {
                            path: service_path(*service),
                            watch: true,
                        },
                    )
                }
            }),
        }
    }

    fn on_reply(
        &mut self,
        s: usize,
        op: &'static str,
        h: &ReplyHeader,
        body: &[u8],
        _ctx: &mut Ctx,
    ) {
        if let (_, Role::Reader { get_next, service }) = &mut self.roles[s] {
            if op == "children" && h.err == 0 {
                let names = children(body);
                if !names.is_empty() {
                    let pick = &names[self.rng.gen_range(0..names.len())];
                    *get_next = Some(format!("{}/{pick}", service_path(*service)));
                }
            }
        }
    }

    fn on_event(&mut self, _s: usize, _ev: &WatcherEvent, _ctx: &mut Ctx) {
        self.notifications += 1;
    }

    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("notifications".into(), self.notifications.into());
        m
    }
}
