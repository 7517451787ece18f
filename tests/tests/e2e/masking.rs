//! Before the second factor is proven, a `login` answer shows where codes go, masked: never
//! a full phone number or e-mail address.

use serde_json::json;
use tessera_tests::{Phones, TestServer, both_stores};

const PASSWORD: &str = "correct horse battery staple";
const PHONE: &str = "+14155550123";
const EMAIL: &str = "jane.doe@example.com";

both_stores!(a_password_alone_sees_masked_contacts, |store| async move {
    let phones = Phones::start().await;
    let s = TestServer::start_with_phones(store, &phones).await;
    let user = s.create_full_user("jane", PASSWORD).await;
    let sms = s.enroll_oob(&user, "SMS", PHONE).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = phones.sms_code(PHONE, 1).await;
    assert_eq!(s.activate(&sms, &code).await["factorResult"], "SUCCESS");
    let mail = s.enroll_oob(&user, "EMAIL", EMAIL).await["factor"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = phones.email_code(EMAIL, 1).await;
    assert_eq!(s.activate(&mail, &code).await["factorResult"], "SUCCESS");

    let r = s
        .gql_as(
            None,
            "mutation($l: String!, $p: String!) { login(input: {login: $l, password: $p}) { \
                 mfaRequired factors { id type phoneNumber email } } }",
            json!({ "l": "jane", "p": PASSWORD }),
        )
        .await;
    let login = &r["data"]["login"];
    assert_eq!(login["mfaRequired"], true, "{r}");
    let factors = login["factors"].as_array().unwrap();
    assert_eq!(factors.len(), 2, "{r}");
    for f in factors {
        if f["id"] == sms.as_str() {
            assert_eq!(f["phoneNumber"], "+1 ••• ••• 0123", "{f}");
        } else {
            assert_eq!(f["email"], "j•••@example.com", "{f}");
        }
    }
    let text = r.to_string();
    assert!(
        !text.contains("4155550123") && !text.contains("jane.doe"),
        "{text}"
    );

    // The administrator, and the user after the second factor, see them in full.
    let full = s
        .ok(
            "query($u: ID!) { user(id: $u) { factors { id phoneNumber email } } }",
            json!({ "u": user }),
        )
        .await;
    let text = full.to_string();
    assert!(text.contains(PHONE) && text.contains(EMAIL), "{text}");
});
