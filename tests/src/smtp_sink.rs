//! A real SMTP server on `127.0.0.1:0` that keeps every message it accepts: the mailbox
//! of end-to-end tests (codes, security alerts). It speaks enough of RFC 5321 for a client
//! without TLS or AUTH (EHLO/HELO, MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP, QUIT)
//! and can be told to refuse the next transactions with a reply of the test's choosing.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};

/// One accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// Headers and body as sent (CRLF line ends, dots unstuffed).
    pub data: String,
}

impl Mail {
    /// A header's value (first occurrence, unfolded), by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = &mut value {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                break;
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                value = Some(v.trim().to_string());
            }
        }
        value
    }

    /// The body (everything after the blank line that ends the headers).
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }

    /// The body as the reader sees it: quoted-printable (RFC 2045 §6.7, lettre's choice for
    /// long lines) decoded, so a search for a secret cannot miss one split by a soft break.
    pub fn text(&self) -> String {
        let qp = self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if !qp {
            return self.body().to_string();
        }
        let joined = self.body().replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'=', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Default)]
struct Inner {
    mails: Mutex<Vec<Mail>>,
    /// Replies to give to the next `MAIL FROM` commands instead of `250`.
    refusals: Mutex<Vec<String>>,
    /// Transactions refused so far.
    refused: Mutex<u32>,
    arrived: Notify,
}

/// The running server; stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Listens on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Inner::default());
        let shared = Arc::clone(&inner);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let _ = session(stream, &shared).await;
                });
            }
        });
        Self { addr, inner, task }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT`, for `TESSERA_SMTP_URL`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Mail> {
        self.inner.mails.lock().expect("lock").clone()
    }

    /// Messages accepted so far for `rcpt`.
    pub fn messages_to(&self, rcpt: &str) -> Vec<Mail> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(rcpt)))
            .collect()
    }

    /// Waits until `n` messages have arrived for `rcpt` (at most `timeout`); returns them.
    /// Panics on timeout, naming what did arrive.
    pub async fn wait_for(&self, rcpt: &str, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.inner.arrived.notified();
            let mails = self.messages_to(rcpt);
            if mails.len() >= n {
                return mails;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{} of {n} messages to {rcpt} arrived in {timeout:?}; all: {:?}",
                    mails.len(),
                    self.messages()
                );
            }
        }
    }

    /// Refuses the next `n` transactions at `MAIL FROM` with `reply` (e.g.
    /// `451 4.3.0 try again later` or `550 5.7.1 rejected`).
    pub fn refuse_next(&self, n: usize, reply: &str) {
        let mut refusals = self.inner.refusals.lock().expect("lock");
        refusals.extend(std::iter::repeat_n(reply.to_string(), n));
    }

    /// Transactions refused so far.
    pub fn refused(&self) -> u32 {
        *self.inner.refused.lock().expect("lock")
    }
}

fn address(arg: &str) -> String {
    let arg = arg.trim();
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

async fn session(stream: TcpStream, inner: &Inner) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 tessera-test-sink ESMTP\r\n").await?;
    let mut from: Option<String> = None;
    let mut to: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end_matches(['\r', '\n']);
        let upper = command.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            "250-tessera-test-sink\r\n250 8BITMIME\r\n".into()
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 OK\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            let refusal = {
                let mut refusals = inner.refusals.lock().expect("lock");
                (!refusals.is_empty()).then(|| refusals.remove(0))
            };
            if let Some(reply) = refusal {
                *inner.refused.lock().expect("lock") += 1;
                format!("{reply}\r\n")
            } else {
                from = Some(address(&command[10..]));
                to.clear();
                "250 OK\r\n".into()
            }
        } else if upper.starts_with("RCPT TO:") {
            if from.is_some() {
                to.push(address(&command[8..]));
                "250 OK\r\n".into()
            } else {
                "503 MAIL first\r\n".into()
            }
        } else if upper == "DATA" {
            if from.is_none() || to.is_empty() {
                "503 RCPT first\r\n".into()
            } else {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                inner.mails.lock().expect("lock").push(Mail {
                    from: from.take().unwrap_or_default(),
                    to: std::mem::take(&mut to),
                    data,
                });
                inner.arrived.notify_waiters();
                "250 OK queued\r\n".into()
            }
        } else if upper.starts_with("RSET") {
            from = None;
            to.clear();
            "250 OK\r\n".into()
        } else if upper.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            "502 command not implemented\r\n".into()
        };
        write.write_all(reply.as_bytes()).await?;
    }
}
