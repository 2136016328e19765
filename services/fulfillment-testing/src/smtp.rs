//! A real SMTP server for tests: Python's aiosmtpd (`tests/smtp/smtp_server.py`), started on a
//! free port like `redis-server`, keeping each message it accepts as a file the test reads.
//! `scripts/install-test-tools` installs aiosmtpd in `.tools/venv`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One SMTP server and the messages it accepted. Stopped (and its files removed) on drop.
#[derive(Debug)]
pub struct TestSmtp {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    options: SmtpOptions,
}

/// How the server behaves.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// Recipients answered 550 at `RCPT TO`.
    pub refuse: Vec<String>,
    /// TLS from the first byte with this certificate and key (`smtps://`).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain first, TLS by `STARTTLS` (required before `MAIL`) with this certificate and key
    /// (`smtp://…?tls=required`).
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// Seconds the server waits before answering `DATA` (a slow relay).
    pub delay: Option<f64>,
}

/// A message as the server received it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The message as sent (headers and body).
    pub raw: String,
    /// The envelope's recipients.
    pub rcpt_tos: Vec<String>,
}

impl ReceivedMail {
    /// A header's value (the first one of that name, unfolded), case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.raw.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with([' ', '\t']) {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_owned());
            }
        }
        value
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python that has aiosmtpd: `.tools/venv`'s, else the system's.
fn python() -> PathBuf {
    let venv = workspace_root().join(".tools/venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

impl TestSmtp {
    pub fn start() -> Self {
        Self::start_with(SmtpOptions::default())
    }

    pub fn start_with(options: SmtpOptions) -> Self {
        let port = crate::free_port();
        let dir = std::env::temp_dir().join(format!(
            "fulfillment-smtp-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("mail dir");
        let mut smtp = Self {
            child: None,
            port,
            dir,
            options,
        };
        smtp.spawn();
        smtp
    }

    /// `smtp://127.0.0.1:<port>` (or, with TLS, `smtps://localhost:<port>` or
    /// `smtp://localhost:<port>?tls=required`: the test certificate names localhost).
    pub fn url(&self) -> String {
        match (&self.options.tls, &self.options.starttls) {
            (Some(_), _) => format!("smtps://localhost:{}", self.port),
            (None, Some(_)) => format!("smtp://localhost:{}?tls=required", self.port),
            (None, None) => format!("smtp://127.0.0.1:{}", self.port),
        }
    }

    fn spawn(&mut self) {
        let mut command = Command::new(python());
        command
            .arg(workspace_root().join("tests/smtp/smtp_server.py"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for address in &self.options.refuse {
            command.arg("--refuse").arg(address);
        }
        if let Some(delay) = self.options.delay {
            command.arg("--delay").arg(delay.to_string());
        }
        if let Some((cert, key)) = &self.options.tls {
            command.arg("--tls").arg(cert).arg(key);
        }
        if let Some((cert, key)) = &self.options.starttls {
            command.arg("--starttls").arg(cert).arg(key);
        }
        let mut child = command.spawn().expect("python3 (for the SMTP server)");
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).expect("the SMTP server's first line");
        assert!(
            line.starts_with("ready"),
            "the SMTP server did not start (is aiosmtpd installed? run scripts/install-test-tools): {line:?}"
        );
        self.child = Some(child);
    }

    /// Stops the server: the relay is down (connections refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, keeping what it received.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpListener::bind(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "port {} stays taken", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// Every message received so far, in the order received.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .filter_map(|eml| {
                let raw = std::fs::read_to_string(&eml).ok()?;
                let meta: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(eml.with_extension("json")).ok()?,
                )
                .ok()?;
                let rcpt_tos = meta["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(ReceivedMail { raw, rcpt_tos })
            })
            .collect()
    }

    /// The messages whose `X-Order-Id` is `order_id`.
    pub fn messages_for(&self, order_id: &str) -> Vec<ReceivedMail> {
        self.messages()
            .into_iter()
            .filter(|m| m.header("X-Order-Id").as_deref() == Some(order_id))
            .collect()
    }
}

impl Drop for TestSmtp {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
