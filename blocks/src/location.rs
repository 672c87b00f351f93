//! Store URLs.
//!
//! * `file:///abs/dir`: a [`crate::LocalStore`] rooted at `/abs/dir` (three slashes: the path
//!   must be absolute; no host, query or fragment).
//! * `s3://bucket[/prefix][?endpoint=http(s)://host:port][&region=name]`: an [`crate::S3Store`].
//!   `endpoint` defaults to Amazon S3, `region` to [`REGION_DEFAULT`]. Credentials never go in the
//!   URL (a URL with a user or password part is refused, and never echoed back): they come from
//!   the environment or the configuration.

use std::path::PathBuf;

use crate::key::validate_prefix;
use crate::s3::REGION_DEFAULT;
use crate::{BlockError, S3Config};

/// What a store URL names.
#[derive(Clone, Debug)]
pub enum StoreLocation {
    /// A local directory.
    Local {
        /// Absolute root directory.
        root: PathBuf,
    },
    /// An S3 bucket and prefix; `credentials` is `None` (read from the environment on open).
    S3(S3Config),
}

/// Parses a store URL (see the module documentation). Errors name the URL (without any user or
/// password part) and say what is wrong.
///
/// ```
/// use markab_blocks::{parse_url, StoreLocation};
/// let StoreLocation::S3(config) =
///     parse_url("s3://backups/cluster-a?endpoint=http://127.0.0.1:9000&region=eu-west-1")?
/// else { unreachable!() };
/// assert_eq!((config.bucket.as_str(), config.prefix.as_str()), ("backups", "cluster-a"));
/// assert!(parse_url("file://relative/dir").is_err());
/// # Ok::<(), markab_blocks::BlockError>(())
/// ```
pub fn parse_url(text: &str) -> Result<StoreLocation, BlockError> {
    let invalid = |reason: &str| BlockError::InvalidUrl {
        url: without_userinfo(text),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(text).map_err(|error| invalid(&format!("not a URL: {error}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "credentials do not belong in a store URL: set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY or give them in the configuration",
        ));
    }
    match url.scheme() {
        "file" => parse_file(text, &url).map_err(|reason| invalid(&reason)),
        "s3" => parse_s3(&url).map_err(|reason| invalid(&reason)),
        scheme => Err(invalid(&format!(
            "unknown scheme {scheme:?}: use file:///absolute/dir or s3://bucket/prefix"
        ))),
    }
}

fn parse_file(text: &str, url: &url::Url) -> Result<StoreLocation, String> {
    if !text.starts_with("file:///") || url.host_str().is_some_and(|host| !host.is_empty()) {
        return Err(
            "a file URL needs an absolute path and no host: file:///absolute/dir".to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a file URL takes no query or fragment".to_string());
    }
    let root = url
        .to_file_path()
        .map_err(|()| "the path is not a valid local path".to_string())?;
    if !root.is_absolute() {
        return Err("a file URL needs an absolute path: file:///absolute/dir".to_string());
    }
    Ok(StoreLocation::Local { root })
}

fn parse_s3(url: &url::Url) -> Result<StoreLocation, String> {
    let bucket = url.host_str().unwrap_or_default();
    if bucket.is_empty() {
        return Err("missing bucket: s3://bucket/prefix".to_string());
    }
    if url.port().is_some() {
        return Err(
            "a bucket has no port; give the server as ?endpoint=http://host:port".to_string(),
        );
    }
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(&byte)
        });
    if !bucket_ok {
        return Err(format!(
            "bucket {bucket:?} is not a valid S3 bucket name (3 to 63 of a-z, 0-9, '.', '-')"
        ));
    }
    if url.fragment().is_some() {
        return Err("an s3 URL takes no fragment".to_string());
    }
    let prefix = validate_prefix(url.path().trim_start_matches('/'))
        .map_err(|error| format!("bad prefix: {error}"))?
        .to_string();
    let mut endpoint = None;
    let mut region = None;
    for (name, value) in url.query_pairs() {
        let slot = match name.as_ref() {
            "endpoint" => &mut endpoint,
            "region" => &mut region,
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: only endpoint and region are accepted"
                ))
            }
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!("parameter {name:?} is given twice"));
        }
    }
    if let Some(endpoint) = &endpoint {
        check_endpoint(endpoint)?;
    }
    let region = region.unwrap_or_else(|| REGION_DEFAULT.to_string());
    if region.is_empty()
        || !region
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    {
        return Err(format!("region {region:?} is not a region name"));
    }
    Ok(StoreLocation::S3(S3Config {
        endpoint: endpoint.map(|endpoint| endpoint.trim_end_matches('/').to_string()),
        region,
        bucket: bucket.to_string(),
        prefix,
        credentials: None,
    }))
}

/// An endpoint is `http(s)://host[:port]` with nothing after it but an optional `/`.
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let bad = |reason: &str| {
        Err(format!(
            "bad endpoint {:?}: {reason}",
            without_userinfo(endpoint)
        ))
    };
    let Ok(url) = url::Url::parse(endpoint) else {
        return bad("not a URL; expected http://host:port");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return bad("the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return bad("missing host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad("credentials do not belong in the endpoint");
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return bad("an endpoint has no path, query or fragment");
    }
    Ok(())
}

/// `text` with the user and password part (`user:pass@`) of every authority in it replaced,
/// including one of an endpoint inside the query.
fn without_userinfo(text: &str) -> String {
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme_end) = rest.find("://") {
        let authority_start = scheme_end + 3;
        clean.push_str(&rest[..authority_start]);
        rest = &rest[authority_start..];
        let authority_end = rest.find(['/', '?', '#', '&']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            clean.push_str("<redacted>");
            rest = &rest[at..];
        }
    }
    clean.push_str(rest);
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(url: &str) -> String {
        match parse_url(url) {
            Err(error @ BlockError::InvalidUrl { .. }) => error.to_string(),
            other => panic!("{url}: expected InvalidUrl, got {other:?}"),
        }
    }

    /// Proves the accepted forms and their defaults.
    #[test]
    fn valid_urls() {
        let StoreLocation::Local { root } = parse_url("file:///var/backups/markab").unwrap() else {
            panic!("not local");
        };
        assert_eq!(root, PathBuf::from("/var/backups/markab"));

        let StoreLocation::S3(config) = parse_url(
            "s3://markab-backups/cluster-a/daily?endpoint=http://127.0.0.1:9000&region=eu-west-1",
        )
        .unwrap() else {
            panic!("not s3");
        };
        assert_eq!(config.bucket, "markab-backups");
        assert_eq!(config.prefix, "cluster-a/daily");
        assert_eq!(config.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.region, "eu-west-1");
        assert!(config.credentials.is_none());

        let StoreLocation::S3(config) = parse_url("s3://bucket").unwrap() else {
            panic!("not s3");
        };
        assert_eq!(
            (config.prefix.as_str(), config.region.as_str()),
            ("", REGION_DEFAULT)
        );
        assert!(config.endpoint.is_none());
    }

    /// Proves an unknown scheme, and text that is no URL at all, are refused with their reason.
    #[test]
    fn unknown_scheme() {
        assert!(error_of("ftp://host/dir").contains("unknown scheme \"ftp\""));
        assert!(error_of("relative/dir").contains("not a URL"));
    }

    /// Proves a file URL must name an absolute path, without host or query.
    #[test]
    fn relative_file_path() {
        assert!(error_of("file://relative/dir").contains("absolute path"));
        assert!(error_of("file:relative/dir").contains("absolute path"));
        assert!(error_of("file:///dir?x=1").contains("no query"));
    }

    /// Proves an s3 URL needs a valid bucket name and no port on it.
    #[test]
    fn missing_or_bad_bucket() {
        assert!(error_of("s3:///prefix").contains("missing bucket"));
        assert!(error_of("s3://").contains("missing bucket"));
        assert!(error_of("s3://Upper_Case/prefix").contains("not a valid S3 bucket name"));
        assert!(error_of("s3://bucket:9000/p").contains("no port"));
    }

    /// Proves the endpoint must be `http(s)://host[:port]`, parameters are known and given once,
    /// and the prefix follows the key rules.
    #[test]
    fn bad_endpoint_and_parameters() {
        assert!(error_of("s3://bucket/p?endpoint=127.0.0.1:9000").contains("bad endpoint"));
        assert!(error_of("s3://bucket/p?endpoint=ftp://host").contains("http or https"));
        assert!(error_of("s3://bucket/p?endpoint=http://host/path").contains("no path"));
        assert!(error_of("s3://bucket/p?endpoint=not%20a%20url").contains("bad endpoint"));
        assert!(error_of("s3://bucket/p?endpont=http://h").contains("unknown parameter"));
        assert!(error_of("s3://bucket/p?region=a&region=b").contains("twice"));
        assert!(error_of("s3://bucket/p?region=").contains("not a region"));
        assert!(error_of("s3://bucket/a//b").contains("bad prefix"));
    }

    /// Proves credentials in a URL are refused without being echoed.
    #[test]
    fn credentials_in_the_url() {
        let error = error_of("s3://AKIAKEYID:topsecret@bucket/p");
        assert!(error.contains("credentials do not belong"), "{error}");
        assert!(
            !error.contains("AKIAKEYID") && !error.contains("topsecret"),
            "{error}"
        );
        let error = error_of("s3://bucket/p?endpoint=http://user:topsecret@host:9000");
        assert!(error.contains("credentials do not belong"), "{error}");
        assert!(!error.contains("topsecret"), "{error}");
    }
}
