//! Requests a browser sends on behalf of a web page. lienthong's APIs serve facilities'
//! systems, never pages: a browser holding a facility's client certificate (or reaching a
//! loopback intake) would otherwise send a page's cross-site POST with those credentials,
//! without asking, and a server that takes any content type would act on it. Browsers mark
//! such requests (Fetch standard): `Origin` on every cross-origin and every POST request, and
//! `Sec-Fetch-Site` naming where the request came from. gRPC clients, curl and HTTP libraries
//! send neither; an address typed into a browser is `Sec-Fetch-Site: none`.

/// What marks a request as sent for a web page, given its `Origin` and `Sec-Fetch-Site`
/// headers; None for a program's request.
pub fn sent_for_a_page(origin: Option<&[u8]>, sec_fetch_site: Option<&[u8]>) -> Option<String> {
    if let Some(origin) = origin {
        return Some(format!(
            "it came from the page of origin {:?}",
            String::from_utf8_lossy(origin)
        ));
    }
    match sec_fetch_site {
        Some(site) if site != b"none" => {
            Some(format!("Sec-Fetch-Site: {}", String::from_utf8_lossy(site)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_s_request_is_told_from_a_program_s() {
        assert_eq!(sent_for_a_page(None, None), None);
        assert_eq!(sent_for_a_page(None, Some(b"none")), None);
        for (origin, site) in [
            (Some(&b"https://forged.example"[..]), None),
            (Some(&b"null"[..]), Some(&b"cross-site"[..])),
            (None, Some(&b"cross-site"[..])),
            (None, Some(&b"same-site"[..])),
            (None, Some(&b"same-origin"[..])),
        ] {
            assert!(
                sent_for_a_page(origin, site).is_some(),
                "{origin:?} {site:?}"
            );
        }
    }
}
