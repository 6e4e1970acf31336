//! The `redfence` binary against real nodes: exit statuses, the child's environment,
//! release on exit, SIGTERM on loss, and one-line errors for bad input.
#![cfg(feature = "cli")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use redfence::testkit::Cluster;
use support::cluster;

fn redfence(nodes: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_redfence"))
        .env("REDFENCE_NODES", nodes)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn nodes(c: &Cluster) -> String {
    c.urls().join(",")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A long-running `redfence` (`--watch`, `--follow`) whose stdout is read line by line;
/// killed when this value goes, on a failed assertion too.
struct Watching {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watching {
    fn start(c: &Cluster, args: &[&str]) -> Self {
        use std::io::BufRead;

        let mut child = Command::new(env!("CARGO_BIN_EXE_redfence"))
            .env("REDFENCE_NODES", nodes(c))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    /// The next line, within 10 s.
    fn next(&self, what: &str) -> String {
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(line) => line,
            Err(e) => panic!("no line for {what}: {e}"),
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file in a fresh directory that is removed with this value.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.file
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.file
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("redfence-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    Scratch { dir, file }
}

/// Starts `redfence ARGS -- sh -c …` whose command, once it holds, writes the shell words
/// `vars` to `out`, then waits until `go` exists.
fn spawn_holder(c: &Cluster, args: &[&str], vars: &str, out: &Path, go: &Path) -> Child {
    let script = format!(
        "echo \"{vars}\" > {out}.tmp; mv {out}.tmp {out}; \
         while [ ! -e {go} ]; do sleep 0.02; done",
        out = out.display(),
        go = go.display()
    );
    Command::new(env!("CARGO_BIN_EXE_redfence"))
        .env("REDFENCE_NODES", nodes(c))
        .args(args)
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) until every file in `outs` exists.
async fn wait_for_files(outs: &[&Path], what: &str) {
    let start = Instant::now();
    while !outs.iter().all(|o| o.exists()) {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_passes_the_lock_to_the_command_and_its_status_back() {
    let c = cluster(5);
    let out = scratch("env");
    let script = format!(
        "echo \"$REDFENCE_LOCK $REDFENCE_TOKEN $REDFENCE_VALIDITY_MS\" > {}; exit 7",
        out.display()
    );
    let o = redfence(
        &nodes(&c),
        &["run", "--ttl", "2s", "backup", "--", "sh", "-c", &script],
    );
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let seen = std::fs::read_to_string(&out).unwrap();
    let words: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(words[0], "backup");
    assert!(words[1].parse::<u64>().unwrap() >= 1, "{seen}");
    let validity: u64 = words[2].parse().unwrap();
    assert!(validity > 0 && validity <= 2000, "{seen}");
    // Released when the command exited: free at once, not after the TTL.
    let client = c.client_builder().build().unwrap();
    let g = client
        .try_acquire("backup")
        .await
        .unwrap()
        .expect("released on exit");
    assert!(g.token().get() > words[1].parse().unwrap());
    g.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_and_a_dead_majority_have_their_own_statuses() {
    let c = cluster(5);
    let client = c.client_builder().build().unwrap();
    let g = client.acquire("busy").await.unwrap();
    let o = redfence(
        &nodes(&c),
        &["run", "--wait", "300ms", "busy", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("held by another owner"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    g.release().await.unwrap();

    for i in [0, 2, 4] {
        c.kill(i).unwrap();
    }
    let o = redfence(
        &nodes(&c),
        &["run", "--wait", "300ms", "busy", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(69), "{}", stderr(&o));
    for i in [0, 2, 4] {
        let name = format!("127.0.0.1:{}", c.port(i));
        assert!(
            stderr(&o).contains(&name),
            "{name} not named: {}",
            stderr(&o)
        );
    }
}

#[test]
fn bad_input_gets_one_line_and_status_2() {
    let good = "redis://127.0.0.1:7001,redis://127.0.0.1:7002,redis://127.0.0.1:7003";
    for (nodes, args, expect) in [
        (
            "redis://:hunter2@127.0.0.1:notaport",
            vec!["run", "x", "--", "true"],
            "notaport",
        ),
        (
            "redis://127.0.0.1:7001,redis://127.0.0.1:7001",
            vec!["run", "x", "--", "true"],
            "given twice",
        ),
        (good, vec!["run", "--ttl", "0s", "x", "--", "true"], "ttl"),
        (good, vec!["run", "x", "true"], "--"),
        (
            good,
            vec!["run", "--ttl", "soon", "x", "--", "true"],
            "soon",
        ),
        (good, vec!["status", ""], "empty"),
    ] {
        let o = redfence(nodes, &args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(expect),
            "{args:?}: {err} does not name {expect:?}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
    let help = redfence(good, &["run", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&help.stdout).contains("Examples:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_command_is_127_and_releases() {
    let c = cluster(3);
    let o = redfence(&nodes(&c), &["run", "cmd", "--", "/nonexistent/command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let client = c.client_builder().build().unwrap();
    assert!(
        client.try_acquire("cmd").await.unwrap().is_some(),
        "left locked"
    );
}

/// Freeze a majority under a running command: it gets SIGTERM (and handles it) before the
/// lease could pass to anyone else, and redfence exits 77.
#[test]
fn losing_the_lock_stops_the_command() {
    let c = cluster(5);
    let marker = scratch("term");
    let grandchild = marker.with_file_name("grandchild");
    let worker = Worker(marker.with_file_name("worker.pid"), grandchild.clone());
    // The command starts a worker of its own: the loss must stop it too (the signal goes
    // to the command's process group).
    let script = format!(
        "sh -c \"trap 'echo terminated > {}; exit 0' TERM; while true; do sleep 0.05; done\" & \
         echo $! > {}; \
         trap 'echo terminated > {}; exit 0' TERM; while true; do sleep 0.05; done",
        grandchild.display(),
        worker.0.display(),
        marker.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_redfence"))
        .env("REDFENCE_NODES", nodes(&c))
        .args([
            "run", "--ttl", "1s", "--grace", "5s", "job", "--", "sh", "-c", &script,
        ])
        .stdin(Stdio::null())
        // Not the harness's stdout: a worker left running would hold it open.
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it holds the lock (its key is on the nodes), then freeze a majority.
    let start = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = c.client_builder().build().unwrap();
    while !rt.block_on(client.inspect("job")).unwrap().is_held() {
        assert!(start.elapsed() < Duration::from_secs(10), "never acquired");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in [1, 2, 3] {
        c.pause(i).unwrap();
    }
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "redfence did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    for i in [1, 2, 3] {
        c.resume(i).unwrap();
    }
    // Checked before reading stderr: a surviving worker would hold the pipe open.
    let start = Instant::now();
    while !grandchild.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the command's own worker kept running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(77), "{err}");
    assert!(err.contains("lost"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "terminated"
    );
    drop(worker);
}

/// The test command's own worker (PID file, exit marker): stopped by PID if it is still
/// running when the test ends, so a failing test does not leave it behind.
struct Worker(PathBuf, PathBuf);

impl Drop for Worker {
    fn drop(&mut self) {
        if self.1.exists() {
            return;
        }
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_node() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let g = client.acquire("shown").await.unwrap();
    c.kill(2).unwrap();
    let o = redfence(&nodes(&c), &["status", "shown"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.contains(&format!("held by {}", "")) || out.contains("held by"),
        "{out}"
    );
    assert!(
        out.contains(&format!("newest token {}", g.token())),
        "{out}"
    );
    assert_eq!(out.matches(" up ").count(), 2, "{out}");
    assert!(out.contains("unreachable"), "{out}");
    // The test kit's nodes run without AOF: each live one is warned about.
    for i in [0, 1] {
        let warning = format!("warning: node 127.0.0.1:{}: appendonly is no", c.port(i));
        assert!(out.contains(&warning), "{out}");
    }
    assert_eq!(out.matches("warning:").count(), 2, "{out}");
    g.release().await.unwrap();
    let o = redfence(&nodes(&c), &["status", "shown"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("not held"));
}

/// Piped, `status` is plain text; `CLICOLOR_FORCE` colours it (`NO_COLOR` wins); `--json`
/// is one JSON object with every node's view and the warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_plain_when_piped_coloured_when_asked_and_json_on_request() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let g = client.acquire("styled").await.unwrap();
    c.kill(2).unwrap();
    let status = |vars: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_redfence"));
        cmd.env("REDFENCE_NODES", nodes(&c))
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE")
            .args(["status", "styled"])
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let plain = status(&[], &[]);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    let coloured = status(&[("CLICOLOR_FORCE", "1")], &[]);
    assert!(coloured.contains("\x1b[32mup"), "{coloured:?}");
    assert!(coloured.contains("\x1b[31munreachable"), "{coloured:?}");
    assert!(coloured.contains("\x1b[33mwarning:"), "{coloured:?}");
    let no_color = status(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")], &[]);
    assert_eq!(no_color.matches('\x1b').count(), 0, "{no_color:?}");

    let out = status(&[("CLICOLOR_FORCE", "1")], &["--json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["lock"], "styled");
    assert_eq!(v["quorum"], 2);
    assert_eq!(v["token"], g.token().get());
    assert!(v["holder"].is_string(), "{v}");
    let views = v["nodes"].as_array().unwrap();
    assert_eq!(views.len(), 3);
    for (i, view) in views.iter().enumerate() {
        assert_eq!(view["node"], format!("127.0.0.1:{}", c.port(i)));
        assert_eq!(view["up"], i != 2, "{view}");
    }
    assert_eq!(views[0]["owner"], v["holder"]);
    assert!(views[0]["ttl_ms"].as_u64().unwrap() > 0);
    assert_eq!(views[0]["fence"], g.token().get());
    assert!(
        views[2]["error"].as_str().unwrap().contains("127.0.0.1"),
        "{v}"
    );
    // The test kit's nodes run without AOF: both live ones are warned about.
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v}");
    g.release().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&status(&[], &["--json"])).unwrap();
    assert!(v["holder"].is_null(), "{v}");
}

/// On a terminal (a pseudo-terminal from `script(1)`), a wait longer than a second says
/// what it waits for and the failure's prefix is red; piped, neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_wait_says_so_on_a_terminal_only() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let g = client.acquire("busy").await.unwrap();
    let line = format!(
        "{} run --wait 1500ms busy -- true",
        env!("CARGO_BIN_EXE_redfence")
    );
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("REDFENCE_NODES", nodes(&c))
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::null())
        .output()
        .expect("script(1), from bsdutils");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(75), "{out:?}");
    assert!(
        out.contains("waiting for \"busy\" (up to 1.5s)…"),
        "{out:?}"
    );
    assert!(out.contains("\x1b[31mredfence:\x1b[0m"), "{out:?}");

    let o = redfence(
        &nodes(&c),
        &["run", "--wait", "1500ms", "busy", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(75));
    let err = stderr(&o);
    assert!(
        !err.contains("waiting for") && !err.contains('\x1b'),
        "{err:?}"
    );
    assert!(err.starts_with("redfence: "), "{err:?}");
    g.release().await.unwrap();
}

/// SIGTERM sent to redfence reaches the command, which decides how to stop; the lock is
/// released when it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_passed_to_the_command() {
    let c = cluster(3);
    let marker = scratch("fwd");
    let script = format!(
        "trap 'echo forwarded > {}; exit 3' TERM; while true; do sleep 0.05; done",
        marker.display()
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_redfence"))
        .env("REDFENCE_NODES", nodes(&c))
        .args(["run", "fwd", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let client = c.client_builder().build().unwrap();
    let start = Instant::now();
    while !client.inspect("fwd").await.unwrap().is_held() {
        assert!(start.elapsed() < Duration::from_secs(10), "never acquired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // let the shell set its trap
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap().trim(),
        "forwarded"
    );
    assert!(
        client.try_acquire("fwd").await.unwrap().is_some(),
        "not released"
    );
}

/// `--permits K`: K commands run at once, each told its slot; the next one waits (here:
/// gives up with the "held" status); a bad K is a usage error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_let_k_commands_run_at_once() {
    let c = cluster(3);
    let go = scratch("go");
    let outs = [scratch("a"), scratch("b")];
    let holders: Vec<_> = outs
        .iter()
        .map(|out| {
            let args = ["run", "--permits", "2", "pool"];
            spawn_holder(
                &c,
                &args,
                "$REDFENCE_SLOT $REDFENCE_LOCK $REDFENCE_TOKEN",
                out,
                &go,
            )
        })
        .collect();
    wait_for_files(&[&outs[0], &outs[1]], "both never ran").await;
    let third = redfence(
        &nodes(&c),
        &[
            "run",
            "--permits",
            "2",
            "--wait",
            "300ms",
            "pool",
            "--",
            "true",
        ],
    );
    assert_eq!(third.status.code(), Some(75), "{}", stderr(&third));
    assert!(
        stderr(&third).contains("all 2 permits of \"pool\" are held"),
        "{}",
        stderr(&third)
    );
    std::fs::write(&*go, b"").unwrap();
    for h in holders {
        let o = h.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    let mut slots = Vec::new();
    for out in &outs {
        let seen = std::fs::read_to_string(out).unwrap();
        let words: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(words.len(), 3, "{seen}");
        assert_eq!(words[1], format!("pool#{}", words[0]), "{seen}");
        assert!(words[2].parse::<u64>().unwrap() >= 1, "{seen}");
        slots.push(words[0].to_owned());
    }
    slots.sort();
    assert_eq!(slots, ["0", "1"]);

    let o = redfence(&nodes(&c), &["run", "--permits", "0", "pool", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("permits of 0"), "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// `--read` commands run together; a `--write` waits for them (here: gives up with the
/// "held" status), then runs alone; the mode is in the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_run_together_and_a_writer_alone() {
    let c = cluster(3);
    let go = scratch("go");
    let outs = [scratch("a"), scratch("b")];
    let readers: Vec<_> = outs
        .iter()
        .map(|out| {
            let args = ["run", "--read", "catalog"];
            spawn_holder(
                &c,
                &args,
                "$REDFENCE_MODE $REDFENCE_LOCK $REDFENCE_TOKEN",
                out,
                &go,
            )
        })
        .collect();
    wait_for_files(&[&outs[0], &outs[1]], "the readers never ran together").await;
    let writer = redfence(
        &nodes(&c),
        &["run", "--write", "--wait", "300ms", "catalog", "--", "true"],
    );
    assert_eq!(writer.status.code(), Some(75), "{}", stderr(&writer));
    std::fs::write(&*go, b"").unwrap();
    for r in readers {
        let o = r.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    for out in &outs {
        let seen = std::fs::read_to_string(out).unwrap();
        assert!(seen.starts_with("read catalog "), "{seen}");
    }
    let written = scratch("w");
    let script = format!(
        "echo \"$REDFENCE_MODE $REDFENCE_TOKEN\" > {}",
        written.display()
    );
    let o = redfence(
        &nodes(&c),
        &["run", "--write", "catalog", "--", "sh", "-c", &script],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = std::fs::read_to_string(&written).unwrap();
    let words: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(words[0], "write", "{seen}");
    assert!(words[1].parse::<u64>().unwrap() >= 1, "{seen}");

    let o = redfence(
        &nodes(&c),
        &["run", "--read", "--write", "catalog", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `--all a,b`: the command runs holding both, told each token; while one is held
/// elsewhere the set waits (here: gives up with the "held" status) and takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_takes_a_set_of_locks() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let b = client.try_acquire("set-b").await.unwrap().unwrap();
    let o = redfence(
        &nodes(&c),
        &[
            "run",
            "--all",
            "--wait",
            "300ms",
            "set-a,set-b",
            "--",
            "true",
        ],
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let a = client
        .try_acquire("set-a")
        .await
        .unwrap()
        .expect("nothing taken");
    a.release().await.unwrap();
    b.release().await.unwrap();

    let out = scratch("tokens");
    let script = format!("echo \"$REDFENCE_TOKENS\" > {}", out.display());
    let o = redfence(
        &nodes(&c),
        &["run", "--all", "set-b,set-a", "--", "sh", "-c", &script],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let seen = std::fs::read_to_string(&out).unwrap();
    let pairs: Vec<&str> = seen.trim().split(',').collect();
    assert_eq!(pairs.len(), 2, "{seen}");
    assert!(
        pairs[0].starts_with("set-a=") && pairs[1].starts_with("set-b="),
        "{seen}"
    );
    for p in pairs {
        let token: u64 = p.split('=').nth(1).unwrap().parse().unwrap();
        assert!(token >= 2, "{seen}");
    }
    let o = redfence(&nodes(&c), &["run", "--all", "x,x", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("twice"), "{}", stderr(&o));
}

/// `elect` runs the command while leading, with the term; a second candidate waits
/// (here: gives up with the "held" status); `leader` shows who leads, then no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_runs_while_leading_and_leader_shows_it() {
    let c = cluster(3);
    let go = scratch("go");
    let out = scratch("term");
    let args = ["elect", "--value", "host-a", "sched"];
    let leading = spawn_holder(&c, &args, "$REDFENCE_TERM $REDFENCE_TOKEN", &out, &go);
    wait_for_files(&[&out], "never led").await;
    let seen = std::fs::read_to_string(&*out).unwrap();
    let words: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(words.len(), 2, "{seen}");
    assert_eq!(words[0], words[1], "the term is the token: {seen}");
    let term = words[0];

    let shown = redfence(&nodes(&c), &["leader", "sched"]);
    assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
    let shown = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(
        shown.starts_with(&format!("term {term} value \"host-a\"")),
        "{shown}"
    );
    let second = redfence(
        &nodes(&c),
        &["elect", "--wait", "300ms", "sched", "--", "true"],
    );
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));

    std::fs::write(&*go, b"").unwrap();
    let o = leading.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let shown = redfence(&nodes(&c), &["leader", "sched"]);
    assert_eq!(String::from_utf8_lossy(&shown.stdout).trim(), "no leader");
}

/// `leader --follow` prints every leadership, in term order, as it happens (woken by the
/// election's announcements: its poll is 30 s), however brief each one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_follow_prints_every_leadership() {
    let c = cluster(3);
    let follow = Watching::start(&c, &["leader", "--follow", "--poll", "30s", "brief"]);
    // The follower is in place once its first read is done: give it a moment, then
    // make sure it did not miss the first leadership anyway (it would print it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let election = c
        .client_builder()
        .build()
        .unwrap()
        .election("brief")
        .unwrap();
    let mut expected = Vec::new();
    for value in ["one", "two", "three"] {
        let l = election.campaign(value).await.unwrap();
        expected.push(format!("term {} value {value:?}", l.term()));
        l.resign().await.unwrap();
    }
    let shown: Vec<String> = expected
        .iter()
        .map(|e| follow.next(&format!("leadership {e}")))
        .collect();
    assert_eq!(shown, expected);
}

/// `list` shows the locks held on a majority that match the pattern (not one held on a
/// single node), as columns or JSON lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_the_locks_held_on_a_majority() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let a = client.acquire("jobs:1").await.unwrap();
    let b = client.acquire("jobs:{2} two").await.unwrap();
    let other = client.acquire("misc").await.unwrap();
    // A stray key on one node: no majority, not listed.
    support::cmd::<()>(&c, 0, &["SET", &support::lock_key("jobs:stray"), "x"]).await;

    let o = redfence(&nodes(&c), &["list", "jobs:*"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("\"jobs:1\""), "{out}");
    assert!(lines[1].starts_with("\"jobs:{2} two\""), "{out}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[2], a.token().to_string(), "{out}");

    let o = redfence(&nodes(&c), &["list", "--json"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(out.lines().count(), 3, "{out}");
    // Each line is JSON (written by hand: checked by a parser), the odd name included.
    let names: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["lock"].clone())
        .collect();
    assert!(names.contains(&"jobs:{2} two".into()), "{names:?}");
    assert!(
        out.contains(&format!(
            "{{\"lock\":\"misc\",\"holder\":\"{}\",\"token\":{},",
            client.inspect("misc").await.unwrap().holder.unwrap(),
            other.token()
        )),
        "{out}"
    );
    drop((a, b, other));
}

/// `break` shows who holds the lock, refuses without a terminal to confirm on unless
/// `--yes`, then releases it; the next holder's token is larger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_releases_a_dead_owners_lock() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let held = client
        .acquire_with("stuck", redfence::AcquireOptions::new().watchdog(false))
        .await
        .unwrap();
    let owner = client.inspect("stuck").await.unwrap().holder.unwrap();
    let old = held.token();
    std::mem::forget(held); // the owner "dies": no release

    let o = redfence(&nodes(&c), &["break", "stuck"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let shown = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        shown.contains(&owner) && shown.contains("3 of 3"),
        "{shown}"
    );
    assert!(
        client.try_acquire("stuck").await.unwrap().is_none(),
        "broken without --yes"
    );

    let o = redfence(&nodes(&c), &["break", "stuck", "--yes"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let next = client
        .try_acquire("stuck")
        .await
        .unwrap()
        .expect("still held");
    assert!(next.token() > old);
    // Nothing held: said so, and nothing done.
    next.release().await.unwrap();
    let o = redfence(&nodes(&c), &["break", "stuck", "--yes"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("not held"));
}

/// `status --watch` prints a line each time the lock changes hands, and none while it
/// does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_prints_each_change_of_hands() {
    let c = cluster(3);
    let watch = Watching::start(&c, &["status", "--watch", "--poll", "20ms", "watched"]);
    assert!(watch.next("the start").contains("not held"));
    let client = c.client_builder().build().unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let g = client.acquire("watched").await.unwrap();
        let line = watch.next("a holder");
        assert!(
            line.contains(&format!("newest token {}", g.token())) && line.contains("on 3 of 3"),
            "{line}"
        );
        // Held a while: polled many times, printed once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tokens.push(g.token());
        g.release().await.unwrap();
        assert!(watch.next("the release").contains("not held"));
    }
    assert!(tokens[0] < tokens[1]);
    assert!(watch.lines.try_recv().is_err(), "a line without a change");
}

/// `status --permits K` shows each permit of a semaphore and `status --rw` the writer,
/// readers and waiting writer of a reader-writer lock, as text and as JSON; `--watch`
/// follows a semaphore; bad counts and both flags at once are usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_semaphores_and_rwlocks() {
    let c = cluster(3);
    let client = c.client_builder().build().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let o = redfence(&nodes(&c), args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };

    let sem = client.semaphore("crawl", 3).unwrap();
    let watch = Watching::start(
        &c,
        &[
            "status",
            "--watch",
            "--poll",
            "20ms",
            "--permits",
            "3",
            "crawl",
        ],
    );
    let line = watch.next("the start");
    assert!(line.ends_with("s 0 of 3 permits held"), "{line}");
    let p = sem.try_acquire().await.unwrap().unwrap();
    let q = sem.try_acquire().await.unwrap().unwrap();
    client.shutdown(Duration::from_secs(5)).await;
    let mut line = watch.next("a holder");
    if line.contains("1 of 3") {
        line = watch.next("the second holder");
    }
    for permit in [&p, &q] {
        let shown = format!("#{} ", permit.slot());
        let token = format!("(token {})", permit.token());
        assert!(line.contains(&shown) && line.contains(&token), "{line}");
    }
    assert!(line.contains("2 of 3 permits held"), "{line}");
    drop(watch);

    let o = redfence(&nodes(&c), &["status", "--permits", "3", "crawl"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        out.starts_with("semaphore \"crawl\" on 3 nodes (quorum 2): 2 of 3 permits held"),
        "{out}"
    );
    let row = format!("\n{:<5} ", p.slot());
    assert!(out.contains(&row), "{out}");
    let v = json(&["status", "--permits", "3", "crawl", "--json"]);
    assert_eq!(v["semaphore"], "crawl");
    assert_eq!(v["permits"], 3);
    assert_eq!(v["held"], 2);
    let slots = v["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3);
    for permit in [&p, &q] {
        let slot = &slots[permit.slot()];
        assert_eq!(slot["lock"], permit.resource());
        assert_eq!(slot["token"], permit.token().get());
        assert_eq!(slot["on"], 3, "{slot}");
        assert!(slot["left_ms"].as_u64().unwrap() > 0, "{slot}");
    }
    assert_eq!(v["warnings"].as_array().unwrap().len(), 3, "{v}");
    p.release().await.unwrap();
    q.release().await.unwrap();

    let lock = client.rwlock("doc").unwrap();
    let readers = [
        lock.try_read().await.unwrap().unwrap(),
        lock.try_read().await.unwrap().unwrap(),
    ];
    client.shutdown(Duration::from_secs(5)).await;
    let o = redfence(&nodes(&c), &["status", "--rw", "doc"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        out.starts_with("rwlock \"doc\" on 3 nodes (quorum 2): read by 2"),
        "{out}"
    );
    assert_eq!(out.matches("\nreader ").count(), 2, "{out}");
    let v = json(&["status", "--rw", "doc", "--json"]);
    assert_eq!(v["readers"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["writer"]["holder"].is_null(), "{v}");
    assert!(v["waiting_writer"].is_null(), "{v}");
    for node in v["reader_nodes"].as_array().unwrap() {
        assert_eq!(node["readers"].as_array().unwrap().len(), 2, "{node}");
    }
    for r in readers {
        r.release().await.unwrap();
    }
    let w = lock.try_write().await.unwrap().unwrap();
    client.shutdown(Duration::from_secs(5)).await;
    let v = json(&["status", "--rw", "doc", "--json"]);
    assert!(v["writer"]["holder"].is_string(), "{v}");
    assert_eq!(v["writer"]["token"], w.token().get());
    assert!(v["readers"].as_array().unwrap().is_empty(), "{v}");
    w.release().await.unwrap();

    for (args, named) in [
        (&["status", "--permits", "0", "crawl"][..], "0"),
        (&["status", "--permits", "2", "--rw", "crawl"][..], "--rw"),
    ] {
        let o = redfence(&nodes(&c), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains(named) && e.lines().count() == 1, "{args:?}: {e}");
    }
}
