//! The Okta-compatible Users and Factors API (`/api/v1`): Okta's MFA guide request by request
//! (users, Google Authenticator with its QR-code link, SMS), its error envelope and codes, the
//! `SSWS` header in both of Okta's forms, and the requests of Okta's Postman collection.

use chrono::TimeDelta;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, OktaAnswer, Phones, TestServer, both_stores};

const GRAPHQL_ROUTE_HINT: &str = "POST /graphql";

/// Okta's times: ISO 8601 with milliseconds and `Z`.
fn is_okta_time(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 24
            && s.ends_with('Z')
            && s.as_bytes()[19] == b'.'
            && chrono::DateTime::parse_from_rfc3339(s).is_ok()
    })
}

/// Asserts Okta's error envelope with `code` and `status`, whose `errorId` is the request id.
fn assert_okta_error(a: &OktaAnswer, status: u16, code: &str) {
    assert_eq!(a.status.as_u16(), status, "{:?}", a.body);
    assert_eq!(a.body["errorCode"], code, "{}", a.body);
    assert_eq!(a.body["errorLink"], code);
    assert!(
        a.body["errorSummary"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(a.body["errorCauses"].is_array());
    let id = a.body["errorId"].as_str().expect("errorId");
    assert_eq!(Some(id), a.header("x-request-id"));
}

/// The text a QR code holds, read with a real decoder (rqrr) from the PNG bytes.
pub(crate) fn decode_qr(png: &[u8]) -> String {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .expect("a PNG")
        .to_luma8();
    let (w, h) = img.dimensions();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        usize::try_from(w).unwrap(),
        usize::try_from(h).unwrap(),
        |x, y| {
            img.get_pixel(u32::try_from(x).unwrap(), u32::try_from(y).unwrap())
                .0[0]
        },
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().expect("the QR code decodes").1
}

fn path_of(href: &Value) -> String {
    let href = href.as_str().expect("href");
    let rest = href.split_once("://").expect("absolute URL").1;
    rest[rest.find('/').expect("a path")..].to_string()
}

async fn create_user(s: &TestServer, login: &str, phone: &str) -> Value {
    let body = json!({ "profile": {
        "firstName": "Isaac", "lastName": "Brock", "email": login, "login": login,
        "mobilePhone": phone } });
    let a = s
        .okta(Method::POST, "/api/v1/users?activate=false", Some(&body))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

both_stores!(
    okta_guide_google_authenticator_then_sms,
    |store| async move {
        let phones = Phones::start().await;
        let s = TestServer::start_with_phones(store, &phones).await;

        // List users (none), then create one without credentials.
        let a = s.okta(Method::GET, "/api/v1/users?limit=25", None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body, json!([]));
        let user = create_user(&s, "isaac.brock@example.com", "+1-555-415-1337").await;
        let uid = user["id"].as_str().unwrap().to_string();
        assert_eq!(user["status"], "ACTIVE");
        assert!(is_okta_time(&user["created"]), "{}", user["created"]);
        assert!(is_okta_time(&user["activated"]));
        assert!(user["lastLogin"].is_null());
        assert_eq!(
            user["profile"],
            json!({ "firstName": "Isaac", "lastName": "Brock",
                    "email": "isaac.brock@example.com", "login": "isaac.brock@example.com",
                    "mobilePhone": "+15554151337", "displayName": null })
        );
        assert!(
            user["_links"]["self"]["href"]
                .as_str()
                .unwrap()
                .ends_with(&uid)
        );
        // By id and by login; the names are in GraphQL too.
        for key in [uid.as_str(), "isaac.brock@example.com"] {
            let a = s
                .okta(Method::GET, &format!("/api/v1/users/{key}"), None)
                .await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.body["id"], uid.as_str());
        }
        let g = s
            .ok(
                "query($u: ID!) { user(id: $u) { firstName lastName login } }",
                json!({ "u": uid }),
            )
            .await;
        assert_eq!(
            g["user"],
            json!({ "firstName": "Isaac", "lastName": "Brock", "login": "isaac.brock@example.com" })
        );
        let a = s.okta(Method::GET, "/api/v1/users", None).await;
        assert_eq!(a.body.as_array().unwrap().len(), 1);

        // Enrol Google Authenticator.
        let factors = format!("/api/v1/users/{uid}/factors");
        let a = s
            .okta(
                Method::POST,
                &factors,
                Some(&json!({ "factorType": "token:software:totp", "provider": "GOOGLE" })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let f = &a.body;
        let fid = f["id"].as_str().unwrap().to_string();
        assert_eq!(f["factorType"], "token:software:totp");
        assert_eq!(f["provider"], "GOOGLE");
        assert_eq!(f["vendorName"], "GOOGLE");
        assert_eq!(f["status"], "PENDING_ACTIVATION");
        assert!(is_okta_time(&f["created"]) && is_okta_time(&f["lastUpdated"]));
        assert_eq!(f["profile"]["credentialId"], "isaac.brock@example.com");
        assert!(
            f["_links"]["activate"]["href"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/factors/{fid}/lifecycle/activate"))
        );
        assert_eq!(f["_links"]["activate"]["hints"]["allow"], json!(["POST"]));
        assert!(f["_links"].get("verify").is_none());
        let activation = &f["_embedded"]["activation"];
        assert_eq!(activation["timeStep"], 30);
        assert_eq!(activation["encoding"], "base32");
        let secret = activation["sharedSecret"].as_str().unwrap().to_string();
        assert_eq!(activation["keyLength"], secret.len());
        assert_eq!(activation["_links"]["qrcode"]["type"], "image/png");
        let qr = path_of(&activation["_links"]["qrcode"]["href"]);

        // The QR link opens without a token and holds the otpauth URI of this secret.
        let a = s.okta_as(None, Method::GET, &qr, None).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("content-type"), Some("image/png"));
        assert_eq!(a.header("cache-control"), Some("no-store"));
        let uri = decode_qr(&a.bytes);
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(uri.contains(&format!("secret={secret}")), "{uri}");
        // A forged or altered token opens nothing.
        let mut forged = qr.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert_okta_error(
            &s.okta_as(None, Method::GET, &forged, None).await,
            404,
            "E0000007",
        );

        // Activate with a code; the QR link dies.
        let a = s
            .okta(
                Method::POST,
                &format!("{factors}/{fid}/lifecycle/activate"),
                Some(&json!({ "passCode": s.code(&secret, 0) })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["status"], "ACTIVE");
        assert!(
            a.body["_links"]["verify"]["href"]
                .as_str()
                .unwrap()
                .ends_with(&format!("/factors/{fid}/verify"))
        );
        assert!(a.body["_links"].get("activate").is_none());
        assert_okta_error(
            &s.okta_as(None, Method::GET, &qr, None).await,
            404,
            "E0000007",
        );

        // Verify, replay, wrong code.
        s.clock.advance(TimeDelta::seconds(30));
        let verify = format!("{factors}/{fid}/verify");
        let code = s.code(&secret, 0);
        let a = s
            .okta(Method::POST, &verify, Some(&json!({ "passCode": code })))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body, json!({ "factorResult": "SUCCESS" }));
        let a = s
            .okta(Method::POST, &verify, Some(&json!({ "passCode": code })))
            .await;
        assert_okta_error(&a, 403, "E0000082");
        let a = s
            .okta(
                Method::POST,
                &verify,
                Some(&json!({ "passCode": s.wrong_code(&secret) })),
            )
            .await;
        assert_okta_error(&a, 403, "E0000068");

        // List, then delete.
        let a = s.okta(Method::GET, &factors, None).await;
        assert_eq!(a.status, StatusCode::OK);
        let listed = a.body.as_array().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0]["id"], fid.as_str());
        assert_eq!(listed[0]["status"], "ACTIVE");
        let a = s
            .okta(Method::DELETE, &format!("{factors}/{fid}"), None)
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert_eq!(s.okta(Method::GET, &factors, None).await.body, json!([]));
        assert_okta_error(
            &s.okta(Method::GET, &format!("{factors}/{fid}"), None).await,
            404,
            "E0000007",
        );

        // SMS: enrol (a code is sent), activate, verify with an empty body (CHALLENGE: a code
        // is sent), verify the code.
        let a = s
            .okta(
                Method::POST,
                &factors,
                Some(&json!({ "factorType": "sms", "provider": "OKTA",
                              "profile": { "phoneNumber": "+1-415-555-0132" } })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let sms = a.body["id"].as_str().unwrap().to_string();
        assert_eq!(a.body["factorType"], "sms");
        assert_eq!(a.body["provider"], "OKTA");
        assert_eq!(a.body["status"], "PENDING_ACTIVATION");
        assert_eq!(a.body["profile"]["phoneNumber"], "+14155550132");
        assert_eq!(a.body["_links"]["resend"][0]["name"], "sms");
        assert!(a.body.get("_embedded").is_none());
        let phone = "+14155550132";
        let code = phones.sms_code(phone, 1).await;
        let a = s
            .okta(
                Method::POST,
                &format!("{factors}/{sms}/lifecycle/activate"),
                Some(&json!({ "passCode": code })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["status"], "ACTIVE");
        s.clock.advance(TimeDelta::seconds(31));
        let verify = format!("{factors}/{sms}/verify");
        let a = s.okta(Method::POST, &verify, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["factorResult"], "CHALLENGE");
        assert!(
            a.body["_links"]["verify"]["href"]
                .as_str()
                .unwrap()
                .ends_with("/verify")
        );
        // Too soon for another code: Okta's 429 with its rate-limit headers.
        let a = s.okta(Method::POST, &verify, None).await;
        assert_okta_error(&a, 429, "E0000109");
        assert_eq!(a.header("x-rate-limit-remaining"), Some("0"));
        assert!(a.header("x-rate-limit-limit").is_some());
        let reset: i64 = a.header("x-rate-limit-reset").unwrap().parse().unwrap();
        assert!(
            reset > s.clock_unix() && reset <= s.clock_unix() + 30,
            "{reset}"
        );
        assert!(a.header("retry-after").is_some());
        let code = phones.sms_code(phone, 2).await;
        let a = s
            .okta(Method::POST, &verify, Some(&json!({ "passCode": code })))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["factorResult"], "SUCCESS");

        // The events carry the same metadata as GraphQL's, plus the route.
        let meta = s.event_metadata("Factor", &sms).await;
        let (kind, enrolled) = &meta[0];
        assert_eq!(kind, "Enrolled");
        assert_eq!(enrolled["route"], "POST /api/v1/users/{user}/factors");
        assert_eq!(enrolled["actor"], "api-key:bootstrap");
        assert_eq!(enrolled["user_agent"], "okta-client-test/1.0");
        assert!(
            enrolled["request_id"]
                .as_str()
                .is_some_and(|r| !r.is_empty())
        );
        assert!(enrolled["client_ip"].as_str().is_some());
        assert!(
            meta.iter()
                .any(|(_, m)| m["route"] == "POST /api/v1/users/{user}/factors/{factor}/verify")
        );
    }
);

both_stores!(
    okta_ssws_keys_in_both_forms_and_nothing_else,
    |store| async move {
        let s = TestServer::start(store).await;
        let users = "/api/v1/users";
        assert_okta_error(
            &s.okta_as(None, Method::GET, users, None).await,
            401,
            "E0000011",
        );
        let bearer = format!("Bearer {ADMIN_KEY}");
        assert_okta_error(
            &s.okta_as(Some(&bearer), Method::GET, users, None).await,
            401,
            "E0000011",
        );
        assert_okta_error(
            &s.okta_as(Some("SSWS not-a-key"), Method::GET, users, None)
                .await,
            401,
            "E0000011",
        );
        let glued = format!("SSWS{ADMIN_KEY}");
        assert_eq!(
            s.okta_as(Some(&glued), Method::GET, users, None)
                .await
                .status,
            StatusCode::OK
        );
        // A user's access token is not an API token.
        s.create_full_user("alice", "correct horse battery staple")
            .await;
        let token = s
            .password_token("alice", "correct horse battery staple")
            .await;
        let as_user = format!("SSWS {token}");
        assert_okta_error(
            &s.okta_as(Some(&as_user), Method::GET, users, None).await,
            401,
            "E0000011",
        );
        // A read:audit key reads the event log only: the directory is refused.
        let key = s
            .ok(
                "mutation { createApiKey(input: {name: \"siem\", scope: READ_AUDIT}) { token } }",
                json!({}),
            )
            .await["createApiKey"]["token"]
            .as_str()
            .unwrap()
            .to_string();
        let siem = format!("SSWS {key}");
        assert_okta_error(
            &s.okta_as(Some(&siem), Method::GET, users, None).await,
            403,
            "E0000006",
        );
        let body = json!({ "profile": { "login": "mallory" } });
        assert_okta_error(
            &s.okta_as(Some(&siem), Method::POST, users, Some(&body))
                .await,
            403,
            "E0000006",
        );
    }
);

both_stores!(okta_errors_use_oktas_codes, |store| async move {
    let s = TestServer::start(store).await;
    assert_okta_error(
        &s.okta(Method::GET, "/api/v1/users/nobody@example.com", None)
            .await,
        404,
        "E0000007",
    );
    let user = create_user(&s, "bob@example.com", "+14155550100").await;
    let uid = user["id"].as_str().unwrap();
    let factors = format!("/api/v1/users/{uid}/factors");
    // A taken login, a malformed body, unknown factors, unsupported factor types.
    let again = json!({ "profile": { "login": "BOB@example.com" } });
    assert_okta_error(
        &s.okta(Method::POST, "/api/v1/users", Some(&again)).await,
        400,
        "E0000001",
    );
    let a = s
        .okta_as(
            Some(&format!("SSWS {ADMIN_KEY}")),
            Method::GET,
            &format!("{factors}/00000000-0000-0000-0000-000000000000"),
            None,
        )
        .await;
    assert_okta_error(&a, 404, "E0000007");
    let raw = s
        .http
        .post(format!("{}{factors}", s.base))
        .header("authorization", format!("SSWS {ADMIN_KEY}"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["errorCode"], "E0000003");
    for (factor_type, provider) in [
        ("question", "OKTA"),
        ("push", "OKTA"),
        ("token", "RSA"),
        ("token", "SYMANTEC"),
        ("token:hardware", "YUBICO"),
        ("token:software:totp", "MICROSOFT"),
        ("webauthn", "FIDO"),
    ] {
        let a = s
            .okta(
                Method::POST,
                &factors,
                Some(&json!({ "factorType": factor_type, "provider": provider })),
            )
            .await;
        assert_okta_error(&a, 400, "E0000001");
        assert!(
            a.body["errorCauses"][0]["errorSummary"]
                .as_str()
                .unwrap()
                .contains("not supported"),
            "{}",
            a.body
        );
    }
    assert_eq!(s.okta(Method::GET, &factors, None).await.body, json!([]));
    // Deleting the user: 204, then unknown.
    let user_path = format!("/api/v1/users/{uid}");
    assert_eq!(
        s.okta(Method::DELETE, &user_path, None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_okta_error(
        &s.okta(Method::GET, &user_path, None).await,
        404,
        "E0000007",
    );
    assert_okta_error(&s.okta(Method::GET, &factors, None).await, 404, "E0000007");
});

both_stores!(
    okta_and_graphql_enrolments_write_the_same_events,
    |store| async move {
        let s = TestServer::start(store).await;
        // Over GraphQL.
        let graphql_user = s.create_user("carol").await;
        let (gql_factor, secret) = s.enroll_totp(&graphql_user).await;
        s.activate(&gql_factor, &s.code(&secret, 0)).await;
        // Over REST.
        let user = create_user(&s, "dave@example.com", "+14155550101").await;
        let uid = user["id"].as_str().unwrap();
        let a = s
            .okta(
                Method::POST,
                &format!("/api/v1/users/{uid}/factors"),
                Some(&json!({ "factorType": "token:software:totp", "provider": "OKTA" })),
            )
            .await;
        assert_eq!(a.body["provider"], "OKTA");
        let rest_factor = a.body["id"].as_str().unwrap().to_string();
        let rest_secret = a.body["_embedded"]["activation"]["sharedSecret"]
            .as_str()
            .unwrap()
            .to_string();
        let a = s
            .okta(
                Method::POST,
                &format!("/api/v1/users/{uid}/factors/{rest_factor}/lifecycle/activate"),
                Some(&json!({ "passCode": s.code(&rest_secret, 0) })),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let gql = s.event_metadata("Factor", &gql_factor).await;
        let rest = s.event_metadata("Factor", &rest_factor).await;
        let types = |m: &[(String, Value)]| m.iter().map(|(t, _)| t.clone()).collect::<Vec<_>>();
        assert_eq!(types(&gql), types(&rest));
        assert_eq!(types(&rest), ["Enrolled", "Activated"]);
        assert_eq!(
            s.event_types("User", &graphql_user).await,
            s.event_types("User", uid).await
        );
        // Told apart by the route only.
        assert_eq!(gql[0].1["route"], GRAPHQL_ROUTE_HINT);
        assert_eq!(rest[0].1["route"], "POST /api/v1/users/{user}/factors");
        // The same keys (the user agent is the client's to send: the GraphQL client sends none;
        // so is the mark saying which values are the client's).
        assert_eq!(rest[0].1["client_supplied"], "user_agent");
        let keys = |m: &Value| {
            let mut k: Vec<_> = m
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| *k != "user_agent" && *k != "client_supplied")
                .cloned()
                .collect();
            k.sort();
            k
        };
        assert_eq!(keys(&gql[0].1), keys(&rest[0].1));
    }
);
