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

both_stores!(
    a_store_refuses_a_master_key_it_was_not_created_with,
    |store| async move {
        let fresh = FreshStore::new(store).await;
        let server = tessera_api::start(fresh.config.clone())
            .await
            .expect("first start");
        server.stop().await;
        let key_records = |config: tessera_api::Config| async move {
            let db = tessera_store::Db::connect(&config.database_url, 1)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM master_key_check")
                .fetch_one(&db.pool)
                .await
                .unwrap();
            n
        };
        assert_eq!(key_records(fresh.config.clone()).await, 1);
        // Another key: in TESSERA_MASTER_KEY (PostgreSQL's only source) or in the key file.
        let other = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
        let mut wrong = fresh.config.clone();
        let names = match store {
            Store::Postgres => {
                wrong.master_key = Some(other.into());
                "TESSERA_MASTER_KEY".to_string()
            }
            Store::Sqlite => {
                let key_file = fresh.dir.join("tessera.db.key");
                std::fs::write(&key_file, other).unwrap();
                key_file.display().to_string()
            }
        };
        let error = match tessera_api::start(wrong).await {
            Ok(server) => {
                server.stop().await;
                panic!("started with a key the store was not created with");
            }
            Err(e) => e.to_string(),
        };
        assert!(error.contains(&names), "{error}");
        assert!(error.contains("sealed under master key"), "{error}");
        // Nothing was recorded for the wrong key.
        assert_eq!(key_records(fresh.config.clone()).await, 1);
        if store == Store::Sqlite {
            // A lost key file is refused too, and not replaced.
            let key_file = fresh.dir.join("tessera.db.key");
            std::fs::remove_file(&key_file).unwrap();
            let error = tessera_api::start(fresh.config.clone())
                .await
                .err()
                .expect("refused without its key file")
                .to_string();
            assert!(error.contains("is missing"), "{error}");
            assert!(!key_file.exists());
        }
    }
);
