//! `ringkeeper-cli [--server H:P[,H:P...]] [--json] [-c "CMD"] [COMMAND ARGS...]`: a
//! shell for any server that speaks ZooKeeper's protocol, with zkCli's commands and
//! output. Given a command (or `-c`), it runs it and exits (status 1 if it failed);
//! given none on a terminal, it is interactive (line editing, history, completion of
//! command names and of paths from the server, watch events printed as they come);
//! given none with a script on stdin, it runs each line and stops at the first that
//! fails, with status 1.

use std::cell::RefCell;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ringkeeper_tools::cli::{event_printer, Output, Shell, COMMANDS};
use rustyline::completion::Completer;
use rustyline::Context;

const USAGE: &str = "usage: ringkeeper-cli [--server host:port[,host:port...]] [--json] [-c \"command\"] [command args...]";

fn print(o: &Output) {
    let _ = std::io::stdout().write_all(o.out.as_bytes());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().write_all(o.err.as_bytes());
}

#[derive(rustyline::Helper, rustyline::Hinter, rustyline::Highlighter, rustyline::Validator)]
struct PathCompleter {
    shell: Rc<RefCell<Shell>>,
}

impl Completer for PathCompleter {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let start = line[..pos].rfind(' ').map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if start == 0 {
            let names = COMMANDS
                .iter()
                .filter(|(c, _)| c.starts_with(word))
                .map(|(c, _)| c.to_string())
                .collect();
            return Ok((0, names));
        }
        let Some(cut) = word.rfind('/') else {
            return Ok((pos, Vec::new()));
        };
        let dir = if cut == 0 { "/" } else { &word[..cut] };
        let names = self.shell.borrow().complete(dir, &word[cut + 1..]);
        Ok((start + cut + 1, names))
    }
}

fn interactive(shell: Shell) -> ExitCode {
    let shell = Rc::new(RefCell::new(shell));
    let mut rl = match rustyline::Editor::<PathCompleter, rustyline::history::DefaultHistory>::new()
    {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("ringkeeper-cli: {e}");
            return ExitCode::from(1);
        }
    };
    rl.set_helper(Some(PathCompleter {
        shell: shell.clone(),
    }));
    loop {
        let prompt = shell.borrow().prompt();
        match rl.readline(&prompt) {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(line.as_str());
                if line.split_whitespace().next() == Some("quit") {
                    break;
                }
                let o = shell.borrow_mut().run_line(&line);
                print(&o);
            }
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(_) => break,
        }
    }
    if let Some(c) = shell.borrow_mut().client.take() {
        c.close();
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut server = "127.0.0.1:2181".to_string();
    let mut json = false;
    let mut command: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--server" | "-server" if i + 1 < args.len() => {
                server = args.remove(i + 1);
                args.remove(i);
            }
            "--json" => {
                json = true;
                args.remove(i);
            }
            "-c" if i + 1 < args.len() => {
                command = Some(args.remove(i + 1));
                args.remove(i);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => i += 1,
        }
    }
    if command.is_none() && !args.is_empty() {
        command = Some(
            args.iter()
                .map(|a| {
                    if a.contains(' ') {
                        format!("\"{a}\"")
                    } else {
                        a.clone()
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    let watches = Arc::new(AtomicBool::new(true));
    let mut shell = Shell::new(&server, json, event_printer(json, watches.clone()), watches);
    // SAFETY: isatty only looks at the descriptor.
    let tty = unsafe { libc::isatty(0) } == 1;
    if command.is_none() && tty {
        println!("Connecting to {server}");
    }
    if let Err(e) = shell.connect(&server) {
        eprintln!("ringkeeper-cli: cannot connect to {server}: {e}");
        return ExitCode::from(1);
    }
    if let Some(cmd) = command {
        let o = shell.run_line(&cmd);
        print(&o);
        if let Some(c) = shell.client.take() {
            c.close();
        }
        return if o.failed {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        };
    }
    if tty {
        println!("\nWATCHER::\n\nWatchedEvent state:SyncConnected type:None path:null");
        return interactive(shell);
    }
    // A script on stdin: every line a command, the first failure ends it.
    let mut status = ExitCode::SUCCESS;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if line.split_whitespace().next() == Some("quit") {
            break;
        }
        let o = shell.run_line(&line);
        print(&o);
        if o.failed {
            status = ExitCode::from(1);
            break;
        }
    }
    if let Some(c) = shell.client.take() {
        c.close();
    }
    status
}
