//! Okta's Postman collection for the Factors API, request by request, against Tessera: the
//! fixture (`../shared/fixtures/okta-factors-api.json`, beside the checkout) lists its 24
//! requests as Okta publishes them (method, path, body, `Authorization` form). Variables are
//! filled from earlier answers, passcodes computed or read from the SMS gateway. Requests for
//! factors Tessera has succeed; those for factors it does not have get Okta's
//! unsupported-factor error; none gets a 5xx.

use std::path::PathBuf;

use chrono::TimeDelta;
use reqwest::Method;
use serde_json::{Value, json};
use tessera_tests::{ADMIN_KEY, OktaAnswer, Phones, TestServer, both_stores};

/// The phone number the collection's `{{phoneNumber}}` stands for, in Okta's form.
const PHONE: &str = "+1-415-555-0132";
/// The same number as Tessera stores it (and the SMS gateway receives it).
const PHONE_E164: &str = "+14155550132";

fn fixture() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/okta-factors-api.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (../shared beside the checkout)", path.display()));
    let doc: Value = serde_json::from_str(&text).expect("fixture JSON");
    doc["requests"].as_array().expect("requests").clone()
}

/// Factor types Tessera does not have, as the collection's request names show them.
fn is_unsupported(name: &str, path: &str) -> bool {
    ["Question", "Push", "Symantec", "RSA", "YubiKey"]
        .iter()
        .any(|w| name.contains(w))
        || path.ends_with("/questions")
}

fn assert_unsupported(name: &str, a: &OktaAnswer) {
    assert_eq!(a.status.as_u16(), 400, "{name}: {}", a.body);
    assert_eq!(a.body["errorCode"], "E0000001", "{name}: {}", a.body);
    let cause = a.body["errorCauses"][0]["errorSummary"]
        .as_str()
        .unwrap_or("");
    assert!(cause.contains("not supported"), "{name}: {}", a.body);
}

struct Vars {
    user: String,
    login: String,
    sms: Option<String>,
    /// The number of the latest SMS factor enrolled.
    sms_phone: Option<String>,
    totp: Option<(String, String)>,
    sms_codes: usize,
}

impl Vars {
    fn fill(&self, text: &str, factor: &str) -> String {
        text.replace("{{userId}}", &self.user)
            .replace("{{factorId}}", factor)
            .replace("{{phoneNumber}}", PHONE)
            .replace("{{username}}", &self.login)
            .replace("{{transactionId}}", "v2mst.none")
    }
}

async fn send(
    s: &TestServer,
    request: &Value,
    vars: &Vars,
    factor: &str,
    body: Option<Value>,
) -> OktaAnswer {
    let method = Method::from_bytes(request["method"].as_str().unwrap().as_bytes()).unwrap();
    let path = vars.fill(request["path"].as_str().unwrap(), factor);
    let auth = request["authorization"]
        .as_str()
        .unwrap()
        .replace("<key>", ADMIN_KEY);
    let body = body.or_else(|| match &request["body"] {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        other => Some(serde_json::from_str(&vars.fill(&other.to_string(), factor)).unwrap()),
    });
    s.okta_as(Some(&auth), method, &path, body.as_ref()).await
}

/// Enrols and activates an SMS and a Google Authenticator factor over the API, as a user of
/// the collection would before its verification requests.
async fn enrol_both(s: &TestServer, phones: &Phones, vars: &mut Vars) {
    let factors = format!("/api/v1/users/{}/factors", vars.user);
    let a = s
        .okta(
            Method::POST,
            &factors,
            Some(&json!({ "factorType": "sms", "provider": "OKTA", "profile": { "phoneNumber": PHONE } })),
        )
        .await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    let sms = a.body["id"].as_str().unwrap().to_string();
    vars.sms_codes += 1;
    let code = phones.sms_code(PHONE_E164, vars.sms_codes).await;
    let a = s
        .okta(
            Method::POST,
            &format!("{factors}/{sms}/lifecycle/activate"),
            Some(&json!({ "passCode": code })),
        )
        .await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    vars.sms = Some(sms);
    let a = s
        .okta(
            Method::POST,
            &factors,
            Some(&json!({ "factorType": "token:software:totp", "provider": "GOOGLE" })),
        )
        .await;
    let totp = a.body["id"].as_str().unwrap().to_string();
    let secret = a.body["_embedded"]["activation"]["sharedSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let a = s
        .okta(
            Method::POST,
            &format!("{factors}/{totp}/lifecycle/activate"),
            Some(&json!({ "passCode": s.code(&secret, 0) })),
        )
        .await;
    assert_eq!(a.status.as_u16(), 200, "{}", a.body);
    vars.totp = Some((totp, secret));
}

both_stores!(okta_postman_collection_replays, |store| async move {
    let requests = fixture();
    assert_eq!(requests.len(), 24, "the collection's 24 requests");
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let login = "postman@example.com";
    let a = s
        .okta(
            Method::POST,
            "/api/v1/users?activate=false",
            Some(&json!({ "profile": { "firstName": "Post", "lastName": "Man", "email": login, "login": login } })),
        )
        .await;
    let mut vars = Vars {
        user: a.body["id"].as_str().unwrap().to_string(),
        login: login.to_string(),
        sms: None,
        sms_phone: None,
        totp: None,
        sms_codes: 0,
    };
    let mut unsupported = 0;
    for request in &requests {
        let full_name = request["name"].as_str().unwrap();
        // The request's own name, without its folder.
        let name = full_name.rsplit(" / ").next().unwrap();
        let path = request["path"].as_str().unwrap();
        let method = request["method"].as_str().unwrap();
        // Which factor `{{factorId}}` stands for: the SMS factor in SMS requests, else the
        // TOTP factor (the collection's verification requests for other types address
        // whichever factor the user has, since no such factor could be enrolled).
        let factor = if name.contains("SMS") {
            vars.sms.clone().unwrap_or_default()
        } else {
            vars.totp.clone().map(|t| t.0).unwrap_or_default()
        };
        // The passcodes: computed or received, in place of the collection's placeholders.
        let body = match name {
            "Activate SMS Factor" => {
                // The first code to the number of the factor being activated: its enrolment's.
                let phone = vars.sms_phone.clone().expect("an SMS factor");
                Some(json!({ "passCode": phones.sms_code(&phone, 1).await }))
            }
            "Verify SMS Factor" => {
                let code = phones.sms_code(PHONE_E164, vars.sms_codes).await;
                Some(json!({ "passCode": code }))
            }
            "Activate TOTP Factor" | "Verify TOTP Factor" | "Verify Token Factor" => {
                // A fresh time step each time: a used one would be a replay.
                s.clock.advance(TimeDelta::seconds(30));
                let (_, secret) = vars.totp.as_ref().expect("a TOTP factor");
                Some(json!({ "passCode": s.code(secret, 0) }))
            }
            _ => None,
        };
        if name == "Send SMS Challenge" {
            // Past the resend interval of the code the enrolment sent.
            s.clock.advance(TimeDelta::seconds(31));
        }
        let a = send(&s, request, &vars, &factor, body).await;
        assert!(a.status.as_u16() < 500, "{name}: {} {}", a.status, a.body);
        if name == "Send Push Challenge" {
            // `{}` to the user's TOTP factor: no push factor exists to address. Okta's
            // envelope, a 400 for the missing passCode.
            assert_eq!(a.status.as_u16(), 400, "{name}: {}", a.body);
            assert_eq!(a.body["errorCode"], "E0000001");
            continue;
        }
        if is_unsupported(name, path) {
            assert_unsupported(name, &a);
            unsupported += 1;
            continue;
        }
        assert!(a.status.is_success(), "{name}: {} {}", a.status, a.body);
        // What later requests need from this answer.
        if method == "POST" && (path.ends_with("/factors") || path.contains("/factors?")) {
            let id = a.body["id"].as_str().unwrap().to_string();
            match a.body["factorType"].as_str().unwrap() {
                "sms" => {
                    if a.body["profile"]["phoneNumber"] == PHONE_E164 {
                        vars.sms_codes += 1;
                    }
                    // Enrolling SMS again while one is pending replaces it (Okta's
                    // `updatePhone=true`): the latest is the one the collection activates.
                    let listed = s
                        .okta(
                            Method::GET,
                            &format!("/api/v1/users/{}/factors", vars.user),
                            None,
                        )
                        .await;
                    let sms_factors = listed.body.as_array().unwrap().iter();
                    let sms_factors: Vec<_> =
                        sms_factors.filter(|f| f["factorType"] == "sms").collect();
                    assert_eq!(sms_factors.len(), 1, "{}", listed.body);
                    assert_eq!(sms_factors[0]["id"], id.as_str());
                    vars.sms_phone = a.body["profile"]["phoneNumber"].as_str().map(String::from);
                    vars.sms = Some(id);
                }
                _ => {
                    let secret = a.body["_embedded"]["activation"]["sharedSecret"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    vars.totp = Some((id, secret));
                }
            }
        }
        match name {
            "Activate SMS Factor" | "Activate TOTP Factor" => {
                assert_eq!(a.body["status"], "ACTIVE", "{name}: {}", a.body);
            }
            "Reset All Factors" => {
                let listed = s
                    .okta(
                        Method::GET,
                        &format!("/api/v1/users/{}/factors", vars.user),
                        None,
                    )
                    .await;
                assert_eq!(listed.body, json!([]), "{name}");
                enrol_both(&s, &phones, &mut vars).await;
            }
            "Send SMS Challenge" => {
                assert_eq!(a.body["factorResult"], "CHALLENGE", "{name}: {}", a.body);
                vars.sms_codes += 1;
            }
            n if n.starts_with("Verify") => {
                assert_eq!(a.body["factorResult"], "SUCCESS", "{name}: {}", a.body);
            }
            _ => {}
        }
    }
    assert_eq!(unsupported, 8, "question, push and hardware-token requests");
});
