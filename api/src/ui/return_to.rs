//! Where a hosted page may send its result: the origins of `TESSERA_UI_RETURN_ORIGINS`,
//! exactly. The server decides (the page only reads the answer it renders), and the same
//! origin is the page's CSP `form-action`, so the browser refuses any other target as well.

use reqwest::Url;

/// Longest `return_to` accepted (a URL, not a document).
pub const MAX_RETURN_TO: usize = 2048;

/// The configured return origins (`scheme://host[:port]`, lower case, no trailing `/`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReturnOrigins {
    origins: Vec<String>,
}

/// Why a `return_to` is refused. The page shows the message; nothing is posted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReturnToRefused {
    /// Not an absolute `http`/`https` URL, too long, or carrying credentials.
    #[error("return_to is not a usable http(s) URL")]
    Malformed,
    /// Its origin is not in the list.
    #[error("return_to goes to {0}, which this Tessera is not configured to return to")]
    OriginNotAllowed(String),
}

impl ReturnOrigins {
    /// From the configured entries; blank entries are skipped.
    ///
    /// # Errors
    /// An entry that is not an origin like `https://app.example.com` (no path, no `*`).
    pub fn new(configured: &[String]) -> Result<Self, String> {
        let mut origins = Vec::new();
        for raw in configured {
            let entry = raw.trim().trim_end_matches('/');
            if entry.is_empty() {
                continue;
            }
            let origin = Url::parse(entry)
                .ok()
                .filter(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host_str().is_some()
                        && u.username().is_empty()
                        && u.password().is_none()
                        && u.path() == "/"
                        && u.query().is_none()
                        && u.fragment().is_none()
                        && !entry.contains('*')
                })
                .map(|u| u.origin().ascii_serialization())
                .ok_or_else(|| {
                    format!(
                        "TESSERA_UI_RETURN_ORIGINS: {entry:?} is not an origin like https://app.example.com"
                    )
                })?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Self { origins })
    }

    /// `return_to` as the page may use it (normalised), if its origin is listed.
    ///
    /// # Errors
    /// [`ReturnToRefused`].
    pub fn check(&self, return_to: &str) -> Result<String, ReturnToRefused> {
        if return_to.len() > MAX_RETURN_TO {
            return Err(ReturnToRefused::Malformed);
        }
        let url = Url::parse(return_to).map_err(|_| ReturnToRefused::Malformed)?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(ReturnToRefused::Malformed);
        }
        let origin = url.origin().ascii_serialization();
        if self.origins.contains(&origin) {
            Ok(url.to_string())
        } else {
            Err(ReturnToRefused::OriginNotAllowed(origin))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(list: &[&str]) -> ReturnOrigins {
        let list: Vec<String> = list.iter().map(|s| (*s).to_string()).collect();
        ReturnOrigins::new(&list).expect("valid list")
    }

    #[test]
    fn a_listed_origin_is_accepted_with_its_path_and_query() {
        let o = origins(&["https://App.Example.com/", "http://localhost:3000"]);
        assert_eq!(
            o.check("https://app.example.com/mfa/done?x=1"),
            Ok("https://app.example.com/mfa/done?x=1".into())
        );
        assert_eq!(
            o.check("http://localhost:3000/"),
            Ok("http://localhost:3000/".into())
        );
    }

    #[test]
    fn another_origin_is_refused_however_close_it_looks() {
        let o = origins(&["https://app.example.com"]);
        for url in [
            "https://app.example.com.evil.test/",
            "http://app.example.com/",
            "https://app.example.com:8443/",
            "https://evil.test/?https://app.example.com",
            "https://evil.test\\@app.example.com/",
        ] {
            assert!(
                matches!(o.check(url), Err(ReturnToRefused::OriginNotAllowed(_))),
                "{url}"
            );
        }
    }

    #[test]
    fn urls_that_are_not_plain_http_are_malformed() {
        let o = origins(&["https://app.example.com"]);
        for url in [
            "javascript:alert(1)",
            "/relative",
            "//app.example.com/",
            "data:text/html,hi",
            "https://user:pw@app.example.com/",
        ] {
            assert_eq!(o.check(url), Err(ReturnToRefused::Malformed), "{url}");
        }
        let long = format!("https://app.example.com/{}", "a".repeat(MAX_RETURN_TO));
        assert_eq!(o.check(&long), Err(ReturnToRefused::Malformed));
    }

    #[test]
    fn without_a_list_nothing_is_accepted() {
        let o = ReturnOrigins::default();
        assert!(matches!(
            o.check("https://app.example.com/"),
            Err(ReturnToRefused::OriginNotAllowed(_))
        ));
    }

    #[test]
    fn a_list_entry_with_a_path_or_wildcard_is_refused() {
        for entry in [
            "https://app.example.com/login",
            "https://*.example.com",
            "app.example.com",
            "ftp://app.example.com",
        ] {
            assert!(ReturnOrigins::new(&[entry.to_string()]).is_err(), "{entry}");
        }
    }
}
