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

/// The key id a factor's TOTP secret is sealed under now, and every event type of the factor,
/// read straight from the event table.
async fn sealed_key_id(server: &TestServer, factor: &str) -> (String, Vec<String>) {
    let events = server.events("Factor", factor).await;
    let mut key_id = String::new();
    for (event_type, payload) in &events {
        let sealed = match event_type.as_str() {
            "Enrolled" => &payload["Enrolled"]["totp"]["secret"]["key_id"],
            "SecretResealed" => &payload["SecretResealed"]["secret"]["key_id"],
            _ => continue,
        };
        key_id = sealed.as_str().expect("a key id").to_string();
    }
    (key_id, events.into_iter().map(|(t, _)| t).collect())
}

/// Leaves only the active key configured: the last line of the key file, or no
/// `TESSERA_PREVIOUS_MASTER_KEYS`.
fn drop_previous_keys(server: &mut TestServer) {
    match server.store {
        Store::Postgres => server.config.previous_master_keys.clear(),
        Store::Sqlite => {
            let key_file = server.dir.as_ref().unwrap().join("tessera.db.key");
            let text = std::fs::read_to_string(&key_file).unwrap();
            let last = text.lines().last().unwrap().to_string();
            std::fs::write(&key_file, last).unwrap();
        }
    }
}

both_stores!(
    after_a_master_key_rotation_old_secrets_verify_new_ones_use_the_new_key_and_the_old_key_can_go,
    |store| async move {
        let mut server = TestServer::start(store).await;
        let (_, old_factor, old_secret) = server.active_totp("alice").await;
        let (_, idle_factor, idle_secret) = server.active_totp("bob").await;
        let (old_id, _) = sealed_key_id(&server, &old_factor).await;
        let configured_before = server.config.master_key.clone();
        // An API key minted under the first key (stored only as a keyed hash).
        let minted = tessera_api::cli::create_api_key(
            server.config.clone(),
            std::sync::Arc::new(server.clock.clone()),
            &tessera_api::cli::CreateKeyArgs {
                name: "ci".into(),
                scope: tessera_api::cli::ScopeArg::Admin,
                expires: None,
            },
        )
        .await
        .unwrap()
        .token;

        // Rotate: the key file gets a new active key; on PostgreSQL the operator sets one.
        let mut key_material: Vec<String> = Vec::new();
        let new_id = match store {
            Store::Sqlite => {
                match tessera_api::cli::rotate_key(&server.config, false)
                    .await
                    .unwrap()
                {
                    tessera_api::cli::Rotated::KeyFile { key_id, .. } => key_id,
                    other => panic!("SQLite rotates its key file: {other:?}"),
                }
            }
            Store::Postgres => {
                let how = tessera_api::cli::rotate_key(&server.config, true)
                    .await
                    .unwrap();
                let tessera_api::cli::Rotated::Instructions(how) = how else {
                    panic!("PostgreSQL keys are the operator's: {how:?}");
                };
                assert!(how.contains("TESSERA_PREVIOUS_MASTER_KEYS"), "{how}");
                // Asked with --print: the last line is a fresh key, and only that key.
                let fresh = how.lines().last().unwrap().to_string();
                assert!(
                    !how.contains(configured_before.as_deref().unwrap()),
                    "{how}"
                );
                server.config.previous_master_keys = vec![configured_before.clone().unwrap()];
                server.config.master_key = Some(fresh.clone());
                key_material.push(fresh);
                String::new()
            }
        };
        if let Some(k) = &configured_before {
            key_material.push(k.clone());
        }
        server.restart().await;
        let key_file = server.dir.as_ref().map(|d| d.join("tessera.db.key"));
        let rotated_file = key_file
            .as_ref()
            .map(|f| std::fs::read_to_string(f).unwrap());
        if let Some(text) = &rotated_file {
            assert_eq!(
                text.lines().filter(|l| !l.starts_with('#')).count(),
                2,
                "{text}"
            );
            key_material.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(String::from),
            );
        }
        let new_id = if new_id.is_empty() {
            tessera_api::keys::configured_ring(&server.config)
                .unwrap()
                .unwrap()
                .0
                .active()
                .check()
                .key_id
        } else {
            new_id
        };
        assert_ne!(new_id, old_id);

        // A secret sealed before the rotation still verifies, and is re-sealed under the new key.
        assert_eq!(
            server
                .verify(&old_factor, &server.code(&old_secret, 0))
                .await,
            "SUCCESS"
        );
        let (now_under, types) = sealed_key_id(&server, &old_factor).await;
        assert_eq!(now_under, new_id, "{types:?}");
        assert_eq!(
            types.iter().filter(|t| *t == "SecretResealed").count(),
            1,
            "{types:?}"
        );
        // A new enrolment is sealed under the new key.
        let user = server.create_user("carol").await;
        let (new_factor, new_secret) = server.enroll_totp(&user).await;
        assert_eq!(sealed_key_id(&server, &new_factor).await.0, new_id);
        assert_eq!(
            server
                .activate(&new_factor, &server.code(&new_secret, 0))
                .await["factorResult"],
            "SUCCESS"
        );
        // bob's factor was not written: still under the old key.
        assert_eq!(sealed_key_id(&server, &idle_factor).await.0, old_id);

        // The old key removed too early: `key check` names the key bob's secret needs, and
        // verifying it is the typed SECRET_UNAVAILABLE; everything else still works.
        drop_previous_keys(&mut server);
        server.restart().await;
        server.clock.advance(chrono::TimeDelta::seconds(30));
        let mut out = Vec::new();
        let report = tessera_api::cli::key_check(&server.config, &mut out)
            .await
            .unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(!report.matches(), "{shown}");
        assert_eq!(report.lacking(), vec![old_id.as_str()], "{shown}");
        assert!(
            shown.contains(&format!(
                "MISSING KEY: secrets are sealed under master key {old_id}"
            )),
            "{shown}"
        );
        let refused = server
            .verify_raw(&idle_factor, &server.code(&idle_secret, 0))
            .await;
        assert_eq!(
            tessera_tests::error_reason(&refused),
            "SECRET_UNAVAILABLE",
            "{refused}"
        );
        assert_ne!(tessera_tests::error_code(&refused), "INTERNAL", "{refused}");
        assert_eq!(
            server
                .verify(&old_factor, &server.code(&old_secret, 0))
                .await,
            "SUCCESS"
        );

        // The old key back, `key reseal`: then no secret needs it, and it can go for good.
        server.stop().await;
        match store {
            Store::Postgres => {
                server.config.previous_master_keys = vec![configured_before.clone().unwrap()];
            }
            Store::Sqlite => {
                std::fs::write(key_file.as_ref().unwrap(), rotated_file.as_ref().unwrap()).unwrap();
            }
        }
        let mut out = Vec::new();
        let resealed = tessera_api::cli::reseal(server.config.clone(), &mut out)
            .await
            .unwrap();
        assert_eq!(resealed, 1, "{}", String::from_utf8_lossy(&out));
        let mut out = Vec::new();
        let report = tessera_api::cli::key_check(&server.config, &mut out)
            .await
            .unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert!(report.matches() && report.stale() == 0, "{shown}");
        assert!(shown.contains("no secret needs the older keys"), "{shown}");
        for k in &key_material {
            assert!(
                !shown.contains(k.as_str()),
                "key material in `key check`: {shown}"
            );
        }
        drop_previous_keys(&mut server);
        server.restart().await;
        server.clock.advance(chrono::TimeDelta::seconds(30));
        assert_eq!(
            server
                .verify(&idle_factor, &server.code(&idle_secret, 0))
                .await,
            "SUCCESS"
        );
        // The API key minted under the first key still works with that key gone: keyed
        // hashes come from the store's root key, which outlives it (sealed under the new one).
        let answer = server
            .gql_as(
                Some(&minted),
                "query($u: ID!) { user(id: $u) { id } }",
                serde_json::json!({ "u": user }),
            )
            .await;
        assert_eq!(answer["data"]["user"]["id"], user.as_str(), "{answer}");
        // No key material in the log.
        for factor in [&old_factor, &idle_factor, &new_factor] {
            for (_, payload) in server.events("Factor", factor).await {
                for k in &key_material {
                    assert!(!payload.to_string().contains(k.as_str()), "key in the log");
                }
            }
        }
    }
);
