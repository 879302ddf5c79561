//! ringkeeper-bench: a load generator for any server speaking ZooKeeper's protocol.
//!
//! `populate` creates the key space; `run` measures a closed loop (each session keeps
//! `--depth` requests in flight) or an open loop (`--rate`, latency measured from each
//! request's intended send time so stalls are not hidden by coordinated omission).

mod client;

use std::collections::{BTreeMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use ringkeeper::proto::{CreateKind, CreateRequest, Request};
use ringkeeper::tree::acl::open_acl_unsafe;

use client::Conn;

const USAGE: &str = "\
usage:
  ringkeeper-bench populate --addr H:P --keys N --value-size B
  ringkeeper-bench run --addr H:P[,H:P...] --sessions N --depth K --mix get=90,set=10
                       --keys N --value-size B --duration S --warmup S [--rate R] [--json]
ops in --mix: get, exists, children, set";

const KEY_PREFIX: &str = "/bench";

fn key(i: u64) -> String {
    format!("{KEY_PREFIX}/k{i:010}")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Get,
    Exists,
    Children,
    Set,
}

#[derive(Clone, Debug)]
struct Args {
    addrs: Vec<String>,
    sessions: usize,
    depth: usize,
    mix: Vec<(Op, u32)>,
    keys: u64,
    value_size: usize,
    duration: Duration,
    warmup: Duration,
    rate: Option<f64>,
    json: bool,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        addrs: vec!["127.0.0.1:2181".into()],
        sessions: 16,
        depth: 16,
        mix: vec![(Op::Get, 100)],
        keys: 1000,
        value_size: 100,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        rate: None,
        json: false,
    };
    let mut i = 0;
    while i < argv.len() {
        let flag = argv[i].as_str();
        let mut val = || -> Result<String, String> {
            i += 1;
            argv.get(i).cloned().ok_or(format!("{flag} needs a value"))
        };
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag {
            "--addr" => a.addrs = val()?.split(',').map(str::to_string).collect(),
            "--sessions" => a.sessions = num(val()?)? as usize,
            "--depth" => a.depth = (num(val()?)? as usize).max(1),
            "--keys" => a.keys = (num(val()?)? as u64).max(1),
            "--value-size" => a.value_size = num(val()?)? as usize,
            "--duration" => a.duration = Duration::from_secs_f64(num(val()?)?),
            "--warmup" => a.warmup = Duration::from_secs_f64(num(val()?)?),
            "--rate" => a.rate = Some(num(val()?)?),
            "--json" => a.json = true,
            "--mix" => {
                let mut mix = Vec::new();
                for part in val()?.split(',') {
                    let (name, w) = part
                        .split_once('=')
                        .ok_or(format!("bad mix entry {part:?}"))?;
                    let op = match name {
                        "get" => Op::Get,
                        "exists" => Op::Exists,
                        "children" => Op::Children,
                        "set" => Op::Set,
                        _ => return Err(format!("unknown op {name:?} in --mix")),
                    };
                    mix.push((
                        op,
                        w.parse().map_err(|_| format!("bad weight in {part:?}"))?,
                    ));
                }
                if mix.iter().map(|m| m.1).sum::<u32>() == 0 {
                    return Err("--mix weights sum to 0".into());
                }
                a.mix = mix;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
        i += 1;
    }
    Ok(a)
}

fn populate(a: &Args) -> Result<(), String> {
    let mut c = Conn::connect(&a.addrs[0], 30000).map_err(|e| format!("connect: {e}"))?;
    let value = Bytes::from(vec![b'v'; a.value_size]);
    let create = |path: String, data: Bytes| {
        Request::Create(CreateRequest {
            kind: CreateKind::Create,
            path,
            data: Some(data),
            acl: open_acl_unsafe(),
            flags: 0,
            ttl_ms: -1,
        })
    };
    c.send(&create(KEY_PREFIX.into(), Bytes::new()))
        .map_err(|e| e.to_string())?;
    c.flush().map_err(|e| e.to_string())?;
    c.recv().map_err(|e| e.to_string())?;
    let window = 256u64;
    let mut sent = 0u64;
    let mut done = 0u64;
    let mut failed = 0u64;
    while done < a.keys {
        while sent < a.keys && sent - done < window {
            c.send(&create(key(sent), value.clone()))
                .map_err(|e| e.to_string())?;
            sent += 1;
        }
        c.flush().map_err(|e| e.to_string())?;
        let r = c.recv().map_err(|e| e.to_string())?;
        // NODEEXISTS: a key space populated before is reused as it is.
        if r.err != 0 && r.err != -110 {
            failed += 1;
        }
        done += 1;
    }
    c.close();
    if failed > 0 {
        return Err(format!("{failed} creates failed"));
    }
    eprintln!(
        "populated {} keys of {} bytes under {KEY_PREFIX}",
        a.keys, a.value_size
    );
    Ok(())
}

struct SessionResult {
    hist: Histogram<u64>,
    ops: u64,
    errors: BTreeMap<i32, u64>,
}

fn pick(mix: &[(Op, u32)], rng: &mut impl Rng) -> Op {
    let total: u32 = mix.iter().map(|m| m.1).sum();
    let mut x = rng.gen_range(0..total);
    for (op, w) in mix {
        if x < *w {
            return *op;
        }
        x -= w;
    }
    mix[0].0
}

fn request(op: Op, k: u64, value: &Bytes) -> Request {
    let path = key(k);
    match op {
        Op::Get => Request::GetData { path, watch: false },
        Op::Exists => Request::Exists { path, watch: false },
        Op::Children => Request::GetChildren2 { path, watch: false },
        Op::Set => Request::SetData {
            path,
            data: Some(value.clone()),
            version: -1,
        },
    }
}

fn session(
    id: usize,
    a: Arc<Args>,
    start: Arc<Barrier>,
    measure_from: Arc<std::sync::Mutex<Option<Instant>>>,
    stop: Arc<AtomicBool>,
) -> Result<SessionResult, String> {
    let addr = &a.addrs[id % a.addrs.len()];
    let mut c = Conn::connect(addr, 30000).map_err(|e| format!("session {id}: {e}"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(id as u64 * 7919 + 1);
    let value = Bytes::from(vec![b'w'; a.value_size]);
    let mut res = SessionResult {
        hist: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
        ops: 0,
        errors: BTreeMap::new(),
    };
    // Open loop: this session's share of the rate, requests at fixed intended times.
    let interval = a
        .rate
        .map(|r| Duration::from_secs_f64(a.sessions as f64 / r.max(1e-9)));
    start.wait();
    let t0 = Instant::now();
    let mut next_intended = t0;
    let mut inflight: VecDeque<(i32, Instant)> = VecDeque::with_capacity(a.depth);
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        while !stopping && inflight.len() < a.depth {
            let intended = match interval {
                Some(iv) => {
                    let now = Instant::now();
                    if next_intended > now && !inflight.is_empty() {
                        break;
                    }
                    if next_intended > now {
                        std::thread::sleep(next_intended - now);
                    }
                    let t = next_intended;
                    next_intended += iv;
                    t
                }
                None => Instant::now(),
            };
            let op = pick(&a.mix, &mut rng);
            let xid = c
                .send(&request(op, rng.gen_range(0..a.keys), &value))
                .map_err(|e| e.to_string())?;
            inflight.push_back((xid, intended));
        }
        if inflight.is_empty() {
            break;
        }
        c.flush().map_err(|e| e.to_string())?;
        let r = c.recv().map_err(|e| format!("session {id}: {e}"))?;
        let (xid, sent_at) = inflight.pop_front().expect("a reply needs a request");
        if xid != r.xid {
            return Err(format!(
                "session {id}: reply xid {} for request {xid}",
                r.xid
            ));
        }
        let from = *measure_from.lock().expect("poisoned");
        if from.is_some_and(|f| sent_at >= f) {
            res.ops += 1;
            if r.err != 0 {
                *res.errors.entry(r.err).or_default() += 1;
            }
            let us = sent_at.elapsed().as_micros() as u64;
            res.hist.saturating_record(us.max(1));
        }
    }
    c.close();
    Ok(res)
}

fn run(a: Args) -> Result<(), String> {
    let a = Arc::new(a);
    let start = Arc::new(Barrier::new(a.sessions + 1));
    let measure_from = Arc::new(std::sync::Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for id in 0..a.sessions {
        let (a, start, m, stop) = (a.clone(), start.clone(), measure_from.clone(), stop.clone());
        handles.push(std::thread::spawn(move || session(id, a, start, m, stop)));
    }
    start.wait();
    std::thread::sleep(a.warmup);
    let measured_start = Instant::now();
    *measure_from.lock().expect("poisoned") = Some(measured_start);
    let total = a.duration.as_secs();
    for s in 0..total {
        std::thread::sleep(Duration::from_secs(1));
        if total >= 10 && (s + 1) % 5 == 0 {
            eprintln!("  ... {}s of {total}s", s + 1);
        }
    }
    std::thread::sleep(a.duration - Duration::from_secs(total));
    // Only requests sent inside the window count; stop sending and drain.
    let window = measured_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut ops = 0;
    let mut errors: BTreeMap<i32, u64> = BTreeMap::new();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| "a session thread panicked".to_string())??;
        hist.add(&r.hist).map_err(|e| e.to_string())?;
        ops += r.ops;
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
    }
    let ops_per_s = ops as f64 / window.as_secs_f64();
    let q = |p: f64| hist.value_at_quantile(p);
    println!(
        "sessions={} depth={} mix={:?} keys={} value={}B window={:.1}s",
        a.sessions,
        a.depth,
        a.mix,
        a.keys,
        a.value_size,
        window.as_secs_f64()
    );
    println!(
        "ops={ops} ops/s={ops_per_s:.0} errors={errors:?}\nlatency us: p50={} p90={} p99={} p99.9={} max={}",
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        hist.max()
    );
    if a.json {
        let errs: Vec<String> = errors.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!(
            "{{\"ops\":{ops},\"ops_per_s\":{ops_per_s:.1},\"errors\":{{{}}},\"latency_us\":{{\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}},\"sessions\":{},\"depth\":{},\"window_s\":{:.3}}}",
            errs.join(","),
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            hist.max(),
            a.sessions,
            a.depth,
            window.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match parse(&argv[1..]) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringkeeper-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let res = match cmd.as_str() {
        "populate" => populate(&args),
        "run" => run(args),
        _ => Err(format!("unknown command {cmd:?}")),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringkeeper-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
