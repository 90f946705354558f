//! Runs README.md's three-terminal quick start, command for command (with `cargo run --release
//! --` standing for the binary under test), and checks that the receiver prints webhooks.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_switchhook");

/// The shell commands of the code block after `<!-- quickstart:N -->`, comments dropped and
/// continuation lines joined.
fn block(readme: &str, n: u32) -> Vec<String> {
    let marker = format!("<!-- quickstart:{n} -->");
    let after = &readme[readme.find(&marker).expect("quick start marker in README")..];
    let body = after.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let joined = body.replace("\\\n", " ");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in joined.lines().filter(|l| !l.trim_start().starts_with('#')) {
        current.push_str(line);
        current.push('\n');
        // A quoted argument may span lines: wait for the quotes to balance.
        if current.matches('\'').count() % 2 == 0 {
            commands.push(current.trim().replace("cargo run --release --", BIN));
            current.clear();
        }
    }
    commands.into_iter().filter(|c| !c.is_empty()).collect()
}

struct Killer(Vec<Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(dir: &std::path::Path, command: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .current_dir(dir)
        .env_remove("SWITCHHOOK_DATABASE_URL")
        .env_remove("SWITCHHOOK_DATA_DIR")
        .env_remove("SWITCHHOOK_TOKEN_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{command}: {e}"))
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (t1, t2, t3) = (block(&readme, 1), block(&readme, 2), block(&readme, 3));
    assert_eq!((t1.len(), t2.len(), t3.len()), (1, 1, 2), "{t1:?} {t2:?} {t3:?}");
    // The README's commands use fixed ports: one still running from trying the README would
    // make this test wait on its own `serve` that cannot start.
    for port in [10022, 8021, 9000] {
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        assert!(free, "port {port} is taken: stop the README's serve, simulate or receive before the tests");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut children = Killer(Vec::new());

    children.0.push(spawn(dir.path(), &t1[0]));
    children.0.push(spawn(dir.path(), &t2[0]));
    let root = dir.path().join("switchhook-data/root.token");
    wait_until("serve's root token", || root.exists());
    wait_until("serve listening", || std::net::TcpStream::connect("127.0.0.1:10022").is_ok());

    let receiver_command = t3[0].trim_end_matches('&').trim();
    let mut receiver = spawn(dir.path(), receiver_command);
    let lines = receiver.stdout.take().unwrap();
    children.0.push(receiver);
    wait_until("receiver listening", || std::net::TcpStream::connect("127.0.0.1:9000").is_ok());

    let out = Command::new("sh").arg("-c").arg(&t3[1]).current_dir(dir.path()).output().unwrap();
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("\"insertedIds\""), "curl answered: {answer}");

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(lines).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).expect("the receiver printed a webhook");
    assert!(line.starts_with("POST /answered {\"id\":"), "{line}");
    assert!(line.contains("\"action\":\"CHANNEL_ANSWER\"") && line.contains("\"Unique-ID\""), "{line}");
}
