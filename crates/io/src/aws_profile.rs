//! The AWS CLI's shared files, for labs that set up S3 access with `aws configure` rather than
//! environment variables: `~/.aws/credentials` (or `AWS_SHARED_CREDENTIALS_FILE`) and
//! `~/.aws/config` (or `AWS_CONFIG_FILE`), profile `AWS_PROFILE` (default `default`).
//!
//! Environment variables win (as in the AWS CLI); the files fill in what they leave unset:
//! `aws_access_key_id` + `aws_secret_access_key` (+ `aws_session_token`), `region` and
//! `endpoint_url` (an S3-compatible server such as MinIO, Ceph or a campus store). In the
//! credentials file a profile's section is `[NAME]`; in the config file `[profile NAME]` (and
//! `[default]`). Indented sub-settings (`s3 =` blocks) are skipped. Credential processes, SSO and
//! role chains are not read; `object_store` itself handles web identity (Kubernetes service
//! accounts), ECS and EC2 instance credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

/// Sections of an INI file: section name -> key -> value.
pub type Sections = BTreeMap<String, BTreeMap<String, String>>;

/// A parsed file and where it was read from.
pub type SharedFile = (Sections, PathBuf);

/// Parses the AWS INI dialect; errors name the file and line.
pub fn parse(text: &str, file: &Path) -> Result<Sections, String> {
    let mut sections = Sections::new();
    let mut current: Option<String> = None;
    let mut in_nested = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let at = || format!("{}:{}", file.display(), i + 1);
        if trimmed.starts_with('[') {
            let name = trimmed
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| {
                    format!(
                        "{}: expected a section header `[name]`, found {trimmed:?}",
                        at()
                    )
                })?;
            sections.entry(name.to_string()).or_default();
            current = Some(name.to_string());
            in_nested = false;
            continue;
        }
        // An indented line under a key with no value is a nested setting (e.g. `s3 =`).
        if line.starts_with([' ', '\t']) && in_nested {
            continue;
        }
        let (key, value) = trimmed
            .split_once('=')
            .ok_or_else(|| format!("{}: expected `key = value`, found {trimmed:?}", at()))?;
        let section = current
            .as_ref()
            .ok_or_else(|| format!("{}: `{}` before any [section]", at(), key.trim()))?;
        let value = value.trim();
        in_nested = value.is_empty();
        if !in_nested {
            sections
                .entry(section.clone())
                .or_default()
                .insert(key.trim().to_ascii_lowercase(), value.to_string());
        }
    }
    Ok(sections)
}

fn file_from(var: &str, default: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)),
    }
}

fn read(path: &Option<PathBuf>) -> Result<Option<SharedFile>, String> {
    let Some(path) = path else { return Ok(None) };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some((parse(&text, path)?, path.clone()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The settings of `profile` from the credentials and config files (credentials file first).
pub fn profile_settings(
    profile: &str,
    credentials: Option<SharedFile>,
    config: Option<SharedFile>,
) -> Option<BTreeMap<String, String>> {
    let mut found = None::<BTreeMap<String, String>>;
    let config_section = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    if let Some((sections, _)) = &config
        && let Some(s) = sections.get(&config_section)
    {
        found.get_or_insert_with(BTreeMap::new).extend(s.clone());
    }
    if let Some((sections, _)) = &credentials
        && let Some(s) = sections.get(profile)
    {
        found.get_or_insert_with(BTreeMap::new).extend(s.clone());
    }
    found
}

/// Fills in from the shared files what the environment left unset. An `AWS_PROFILE` that names
/// a profile in neither file is an error; a missing default profile is not.
pub fn apply(builder: AmazonS3Builder) -> Result<AmazonS3Builder, String> {
    let explicit = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty());
    let profile = explicit.clone().unwrap_or_else(|| "default".into());
    let credentials_path = file_from("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let config_path = file_from("AWS_CONFIG_FILE", ".aws/config");
    let credentials = read(&credentials_path)?;
    let config = read(&config_path)?;
    let Some(settings) = profile_settings(&profile, credentials, config) else {
        return match explicit {
            Some(p) => Err(format!(
                "AWS_PROFILE={p}: no such profile in {} or {}",
                credentials_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                config_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            None => Ok(builder),
        };
    };
    let mut b = builder;
    let unset = |b: &AmazonS3Builder, k: AmazonS3ConfigKey| b.get_config_value(&k).is_none();
    if unset(&b, AmazonS3ConfigKey::AccessKeyId)
        && let (Some(id), Some(secret)) = (
            settings.get("aws_access_key_id"),
            settings.get("aws_secret_access_key"),
        )
    {
        b = b.with_access_key_id(id).with_secret_access_key(secret);
        if let Some(token) = settings.get("aws_session_token") {
            b = b.with_token(token);
        }
    }
    // `from_env` leaves the region at its default (us-east-1) when AWS_REGION is unset.
    if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        && let Some(region) = settings.get("region")
    {
        b = b.with_region(region);
    }
    if unset(&b, AmazonS3ConfigKey::Endpoint)
        && let Some(endpoint) = settings.get("endpoint_url")
    {
        b = b.with_endpoint(endpoint);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "# written by aws configure\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key=secret0\n\n[lab]\naws_access_key_id = AKIALAB\naws_secret_access_key = secret1\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile lab]\nregion = us-west-2\nendpoint_url = http://minio.lab:9000\ns3 =\n  addressing_style = path\n  max_concurrent_requests = 4\n; comment\n";

    fn files() -> (Option<SharedFile>, Option<SharedFile>) {
        let c = PathBuf::from("credentials");
        let k = PathBuf::from("config");
        (
            Some((parse(CREDENTIALS, &c).unwrap(), c)),
            Some((parse(CONFIG, &k).unwrap(), k)),
        )
    }

    #[test]
    fn profiles_merge_credentials_and_config() {
        let (c, k) = files();
        let lab = profile_settings("lab", c.clone(), k.clone()).unwrap();
        assert_eq!(lab["aws_access_key_id"], "AKIALAB");
        assert_eq!(lab["aws_session_token"], "tok");
        assert_eq!(lab["region"], "us-west-2");
        assert_eq!(lab["endpoint_url"], "http://minio.lab:9000");
        // Nested `s3 =` settings are not top-level keys.
        assert!(!lab.contains_key("addressing_style"));
        let default = profile_settings("default", c.clone(), k.clone()).unwrap();
        assert_eq!(default["aws_secret_access_key"], "secret0");
        assert_eq!(default["region"], "eu-west-1");
        assert!(profile_settings("nobody", c, k).is_none());
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let e = parse(
            "[default]\naws_access_key_id AKIA\n",
            Path::new("/h/.aws/credentials"),
        )
        .unwrap_err();
        assert!(
            e.starts_with("/h/.aws/credentials:2: expected `key = value`"),
            "{e}"
        );
        let e = parse("region = x\n", Path::new("cfg")).unwrap_err();
        assert!(
            e.contains("cfg:1") && e.contains("before any [section]"),
            "{e}"
        );
        let e = parse("[default\n", Path::new("cfg")).unwrap_err();
        assert!(e.contains("cfg:1: expected a section header"), "{e}");
    }
}
