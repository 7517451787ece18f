//! The built `tessera serve` on SIGTERM: an open websocket gets the close frame 1001 (going
//! away) before the process exits, and the exit is clean. The websocket is spoken by hand
//! (RFC 6455 framing) so the test needs nothing but the binary.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const KEY: &str = "sigterm-test-bootstrap-key-0123";

fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tcp.read_exact(&mut head).expect("frame header");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).unwrap();
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    tcp.read_exact(&mut payload).expect("frame payload");
    (head[0] & 0x0f, payload)
}

fn send_text(tcp: &mut TcpStream, text: &str) {
    let mask = [7u8, 1, 9, 3];
    let bytes = text.as_bytes();
    assert!(bytes.len() < 126);
    let mut frame = vec![0x81, 0x80 | u8::try_from(bytes.len()).unwrap()];
    frame.extend_from_slice(&mask);
    frame.extend(bytes.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    tcp.write_all(&frame).unwrap();
}

#[test]
fn sigterm_closes_websockets_with_going_away_and_exits_cleanly() {
    let dir = std::env::temp_dir().join(format!("sigterm_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_clear()
        .arg("serve")
        .env(
            "TESSERA_DATABASE_URL",
            format!("sqlite://{}/tessera.db", dir.display()),
        )
        .env("TESSERA_LISTEN", &addr)
        .env("TESSERA_BOOTSTRAP_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tessera serve");

    // Up once /healthz answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tcp = loop {
        if let Ok(mut probe) = TcpStream::connect(&addr) {
            probe
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = probe.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") {
                break TcpStream::connect(&addr).unwrap();
            }
        }
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        tcp,
        "GET /graphql/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).expect("handshake answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    send_text(
        &mut tcp,
        &format!(r#"{{"type":"connection_init","payload":{{"Authorization":"Bearer {KEY}"}}}}"#),
    );
    let (opcode, ack) = read_frame(&mut tcp);
    assert_eq!(opcode, 1);
    assert!(String::from_utf8_lossy(&ack).contains("connection_ack"));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let close = loop {
        match read_frame(&mut tcp) {
            (8, payload) => break payload,
            (9 | 10 | 1, _) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    };
    assert!(close.len() >= 2, "a close frame without a code");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1001);

    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("still running after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
