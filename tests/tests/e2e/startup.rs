//! How `tessera serve` starts: host names as listen addresses, and a port in use refused
//! before anything is created.

use std::net::ToSocketAddrs;

use tessera_tests::{
    Phones, Store, TestServer, both_stores, fresh::FreshStore, log_capture::LogCapture,
};

both_stores!(a_host_name_is_a_listen_address, |store| async move {
    let fresh = FreshStore::new(store).await;
    let mut config = fresh.config.clone();
    config.listen = "localhost:0".parse().unwrap();
    let server = tessera_api::start(config)
        .await
        .expect("serves on localhost");
    assert!(server.addr.ip().is_loopback(), "{}", server.addr);
    let health = reqwest::get(format!("http://localhost:{}/healthz", server.addr.port()))
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), 200);
    server.stop().await;
});

both_stores!(
    a_port_in_use_names_the_address_and_creates_nothing,
    |store| async move {
        let fresh = FreshStore::new(store).await;
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        // `localhost` may also name ::1: take the port there too (where there is IPv6).
        let also_taken: Vec<_> = ("localhost", port)
            .to_socket_addrs()
            .unwrap()
            .filter(|a| !a.ip().is_ipv4())
            .filter_map(|a| std::net::TcpListener::bind(a).ok())
            .collect();
        for listen in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let mut config = fresh.config.clone();
            config.listen = listen.parse().unwrap();
            let error = match tessera_api::start(config).await {
                Ok(server) => {
                    server.stop().await;
                    panic!("started on {listen}, which is taken");
                }
                Err(e) => e.to_string(),
            };
            assert!(
                error.contains(&format!("cannot listen on {listen}")),
                "{error}"
            );
            assert!(error.contains("in use"), "{error}");
        }
        // No database file, key file or outbox; no table on PostgreSQL.
        assert_eq!(fresh.files(), Vec::<String>::new());
        assert_eq!(fresh.pg_tables().await, Vec::<String>::new());
        // The same settings start once the port is free.
        drop((taken, also_taken));
        let server = tessera_api::start(fresh.config.clone())
            .await
            .expect("starts");
        if store == Store::Sqlite {
            assert!(fresh.files().contains(&"tessera.db".to_string()));
        } else {
            assert!(fresh.pg_tables().await.contains(&"events".to_string()));
        }
        server.stop().await;
    }
);

both_stores!(
    the_outbox_warning_names_only_the_channel_that_uses_it,
    |store| async move {
        let capture = LogCapture::global();
        let phones = Phones::start().await;
        for (smtp, sms, names, omits) in [
            (
                true,
                false,
                "set TESSERA_SMS_WEBHOOK_URL for",
                "TESSERA_SMTP_URL",
            ),
            (
                false,
                true,
                "set TESSERA_SMTP_URL for",
                "TESSERA_SMS_WEBHOOK_URL",
            ),
            (
                false,
                false,
                "set TESSERA_SMTP_URL and TESSERA_SMS_WEBHOOK_URL for",
                "no such text",
            ),
        ] {
            let s = TestServer::start_with(store, |c| {
                c.smtp_url = smtp.then(|| phones.smtp.url());
                c.sms_webhook_url = sms.then(|| phones.sms.url("/sms"));
            })
            .await;
            // Other tests' servers log into the same capture; this one's lines name its outbox.
            let outbox = s.outbox.display().to_string();
            let text = capture.text();
            let warnings: Vec<&str> = text
                .lines()
                .filter(|l| l.contains("WARN") && l.contains(&outbox))
                .collect();
            assert_eq!(warnings.len(), 1, "{warnings:?}");
            assert!(warnings[0].contains(names), "{}", warnings[0]);
            assert!(!warnings[0].contains(omits), "{}", warnings[0]);
        }
        // With both channels configured there is no outbox and no warning.
        let s = TestServer::start_with_phones(store, &phones).await;
        assert!(!capture.text().contains(&s.outbox.display().to_string()));
    }
);
