//! The SDL's descriptions are for the API's clients: what a value means on the wire, not
//! the Rust type behind it or a document outside the repository.

use tessera_api::graphql::build_schema;

/// The description blocks of the SDL.
fn descriptions(sdl: &str) -> Vec<String> {
    sdl.split("\"\"\"")
        .skip(1)
        .step_by(2)
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn the_date_time_scalar_is_described_as_clients_send_and_receive_it() {
    let sdl = build_schema(None).sdl();
    let at = sdl.find("scalar DateTime").expect("a DateTime scalar");
    let description = descriptions(&sdl[..at]).pop().expect("described");
    for needed in ["RFC 3339", "UTC", "+00:00", "Z", "+01:00"] {
        assert!(description.contains(needed), "{needed}: {description}");
    }
    assert!(!description.contains("DateTime<"), "{description}");
}

#[test]
fn no_description_speaks_rust_or_cites_outside_documents() {
    let sdl = build_schema(None).sdl();
    let all = descriptions(&sdl);
    assert!(all.len() > 100, "descriptions not found: {}", all.len());
    for d in &all {
        for rust in [
            "<Utc>",
            "Option<",
            "Vec<",
            "::",
            "Implement the",
            "impl ",
            "struct",
            "Rust",
            "SPEC",
            "§",
            "STACK-NOTES",
            "each feature adds",
        ] {
            assert!(!d.contains(rust), "{rust:?} in {d:?}");
        }
    }
}
