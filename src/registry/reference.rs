//! Image references: parsing and Docker's normalisation (the grammar of distribution/reference,
//! `ParseNormalizedNamed`). Owns what a reference means (`nginx` is `docker.io/library/nginx:latest`)
//! and how RepoDigests entries are matched to it. Pure: no I/O, knows nothing of HTTP or the engine.

use std::fmt;

/// Docker Hub's canonical registry name in normalised references.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's registry API actually lives.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// A legacy spelling of Docker Hub that normalises to `docker.io`.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// distribution/reference's `NameTotalLengthMax`, counted on the normalised name.
const NAME_MAX: usize = 255;
const TAG_MAX: usize = 128;

/// A normalised image reference. `tag` is `latest` when the reference has neither tag nor digest;
/// a reference with both keeps both (it is pinned by the digest, and may follow the tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`, `[::1]:5000`.
    pub registry: String,
    /// `library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Why a reference string is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferenceProblem {
    Empty,
    /// A 64-hex string is an image id, not a name (Docker refuses it too).
    ImageIdNotName,
    Uppercase,
    EmptyComponent,
    InvalidComponent(String),
    InvalidDomain(String),
    TooLong(usize),
    InvalidTag(String),
    InvalidDigest(String),
    UnsupportedDigestAlgorithm(String),
}

impl fmt::Display for ReferenceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceProblem::Empty => f.write_str("reference is empty"),
            ReferenceProblem::ImageIdNotName => {
                f.write_str("a 64-character hexadecimal string is an image id, not a repository name")
            }
            ReferenceProblem::Uppercase => f.write_str("repository name must be lowercase"),
            ReferenceProblem::EmptyComponent => {
                f.write_str("repository name has an empty path component")
            }
            ReferenceProblem::InvalidComponent(c) => write!(
                f,
                "path component {c:?} is invalid (allowed: a-z, 0-9, separated by '.', '_', '__' or '-')"
            ),
            ReferenceProblem::InvalidDomain(d) => write!(f, "registry host {d:?} is invalid"),
            ReferenceProblem::TooLong(n) => {
                write!(f, "repository name is {n} characters long (at most {NAME_MAX})")
            }
            ReferenceProblem::InvalidTag(t) => write!(
                f,
                "tag {t:?} is invalid (allowed: letters, digits, '_', '.', '-', not starting with '.' or '-', at most {TAG_MAX})"
            ),
            ReferenceProblem::InvalidDigest(d) => write!(
                f,
                "digest {d:?} is invalid (expected algorithm:hex, e.g. sha256 and 64 lowercase hex digits)"
            ),
            ReferenceProblem::UnsupportedDigestAlgorithm(a) => write!(
                f,
                "digest algorithm {a:?} is not supported (sha256, sha384, sha512)"
            ),
        }
    }
}

/// A reference that could not be parsed: names the reference and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError {
    pub reference: String,
    pub problem: ReferenceProblem,
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid reference {:?}: {}",
            self.reference, self.problem
        )
    }
}

impl std::error::Error for ReferenceError {}

impl Reference {
    /// Parses and normalises `s` the way `docker pull` does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        parse(s)
    }

    /// The host to talk to for the registry API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The full normalised reference, same as `Display`: `docker.io/library/nginx:latest`.
    pub fn familiar(&self) -> String {
        self.to_string()
    }

    /// `registry/repository`, the key to compare with RepoDigests entries: `docker.io/library/nginx`.
    pub fn repo_key(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to put after `/manifests/`: the tag when there is one, else the digest.
    pub fn manifest_ref(&self) -> &str {
        self.tag
            .as_deref()
            .or(self.digest.as_deref())
            .unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

/// Parses and normalises `s` the way `docker pull` does (distribution/reference `ParseNormalizedNamed`).
pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
    let err = |problem| ReferenceError {
        reference: s.to_string(),
        problem,
    };
    if s.is_empty() {
        return Err(err(ReferenceProblem::Empty));
    }
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err(ReferenceProblem::ImageIdNotName));
    }

    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    // The tag is after the last ':' that follows the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(err(ReferenceProblem::Empty));
    }

    let (registry, remainder) = split_domain(name);
    if let Some(domain) = registry {
        if !valid_domain(domain) {
            return Err(err(ReferenceProblem::InvalidDomain(domain.to_string())));
        }
    }
    if remainder.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(err(ReferenceProblem::Uppercase));
    }
    for component in remainder.split('/') {
        if component.is_empty() {
            return Err(err(ReferenceProblem::EmptyComponent));
        }
        if !valid_path_component(component) {
            return Err(err(ReferenceProblem::InvalidComponent(
                component.to_string(),
            )));
        }
    }

    let registry = match registry {
        None | Some(DOCKER_HUB_LEGACY) => DOCKER_HUB,
        Some(d) => d,
    };
    let repository = if registry == DOCKER_HUB && !remainder.contains('/') {
        format!("library/{remainder}")
    } else {
        remainder.to_string()
    };
    let total = registry.len() + 1 + repository.len();
    if total > NAME_MAX {
        return Err(err(ReferenceProblem::TooLong(total)));
    }

    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(err(ReferenceProblem::InvalidTag(t.to_string())));
        }
    }
    if let Some(d) = digest {
        validate_digest(d).map_err(err)?;
    }
    let tag = match (tag, digest) {
        (Some(t), _) => Some(t.to_string()),
        (None, None) => Some("latest".to_string()),
        (None, Some(_)) => None,
    };
    Ok(Reference {
        registry: registry.to_string(),
        repository,
        tag,
        digest: digest.map(str::to_string),
    })
}

/// Docker's `splitDockerDomain`: the first component is a host when it contains `.` or `:`, is
/// `localhost`, or has uppercase letters (which a repository path cannot have).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]` where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        if host.is_empty() {
            return true; // the bracketed IPv6 case, already checked
        }
    }
    // Domain components: alphanumerics, inner hyphens (an IPv4 address matches this too).
    !host.is_empty()
        && host.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// `algorithm:hex`, with the algorithm known and the hex of its exact length in lowercase (go-digest).
fn validate_digest(d: &str) -> Result<(), ReferenceProblem> {
    let bad = || ReferenceProblem::InvalidDigest(d.to_string());
    let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
    let algo_ok = !algo.is_empty()
        && algo.split(['+', '.', '_', '-']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        });
    if !algo_ok || hex.len() < 32 || !hex.bytes().all(|x| x.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => {
            return Err(ReferenceProblem::UnsupportedDigestAlgorithm(
                other.to_string(),
            ))
        }
    };
    if hex.len() != len || hex.bytes().any(|x| x.is_ascii_uppercase()) {
        return Err(bad());
    }
    Ok(())
}

/// The digest among an image's `RepoDigests` (`nginx@sha256:...`, as the engine stores them) whose
/// normalised repository is the reference's. Entries that do not parse are ignored.
pub fn digest_for_repository(repo_digests: &[String], reference: &Reference) -> Option<String> {
    digests_for_repository(repo_digests, reference).next()
}

/// Every digest of the reference's repository among `RepoDigests`: the classic store keeps the old
/// index digest beside the new one when a re-pulled multi-platform tag changed only for other
/// platforms, so "up to date" means "the remote digest is among them", not "equals the first".
pub fn digests_for_repository<'a>(
    repo_digests: &'a [String],
    reference: &'a Reference,
) -> impl Iterator<Item = String> + 'a {
    repo_digests.iter().filter_map(|entry| {
        let r = parse(entry).ok()?;
        (r.registry == reference.registry && r.repository == reference.repository)
            .then_some(r.digest)
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (input, registry, repository, tag, digest)
    fn ok(input: &str, registry: &str, repository: &str, tag: Option<&str>, digest: Option<&str>) {
        let r = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.tag.as_deref(),
                r.digest.as_deref()
            ),
            (registry, repository, tag, digest),
            "{input}"
        );
        assert_eq!(
            parse(&r.to_string()).as_ref(),
            Ok(&r),
            "round trip of {input}"
        );
    }

    fn bad(input: &str, problem: ReferenceProblem) {
        match parse(input) {
            Ok(r) => panic!("{input} parsed as {r}"),
            Err(e) => {
                assert_eq!(e.problem, problem, "{input}: {e}");
                assert!(e.to_string().contains(&format!("{input:?}")), "{e}");
            }
        }
    }

    #[test]
    fn normalises_like_docker() {
        let hub = "docker.io";
        ok("nginx", hub, "library/nginx", Some("latest"), None);
        ok("nginx:1.25", hub, "library/nginx", Some("1.25"), None);
        ok("library/nginx", hub, "library/nginx", Some("latest"), None);
        ok(
            "docker.io/nginx",
            hub,
            "library/nginx",
            Some("latest"),
            None,
        );
        ok(
            "docker.io/library/nginx",
            hub,
            "library/nginx",
            Some("latest"),
            None,
        );
        ok(
            "index.docker.io/library/nginx:1.25",
            hub,
            "library/nginx",
            Some("1.25"),
            None,
        );
        ok(
            "index.docker.io/nginx",
            hub,
            "library/nginx",
            Some("latest"),
            None,
        );
        ok("user/app:v2", hub, "user/app", Some("v2"), None);
        ok("localhost/foo", "localhost", "foo", Some("latest"), None);
        ok(
            "localhost:5000/a/b:c",
            "localhost:5000",
            "a/b",
            Some("c"),
            None,
        );
        ok("ghcr.io/o/r", "ghcr.io", "o/r", Some("latest"), None);
        ok(&format!("ghcr.io/o/r@{D}"), "ghcr.io", "o/r", None, Some(D));
        ok(
            &format!("foo:1.2@{D}"),
            hub,
            "library/foo",
            Some("1.2"),
            Some(D),
        );
        ok(
            "127.0.0.1:5000/x",
            "127.0.0.1:5000",
            "x",
            Some("latest"),
            None,
        );
        ok("[::1]:5000/x:t", "[::1]:5000", "x", Some("t"), None);
        ok("[fe80::1]/x", "[fe80::1]", "x", Some("latest"), None);
        ok(
            "Registry.Example.com/a",
            "Registry.Example.com",
            "a",
            Some("latest"),
            None,
        );
        ok("Foo/bar", "Foo", "bar", Some("latest"), None);
        ok(
            "my-registry.io:443/team/sub/app:1.0-alpine",
            "my-registry.io:443",
            "team/sub/app",
            Some("1.0-alpine"),
            None,
        );
        ok(
            "a__b/c.d/e---f_g:_x",
            hub,
            "a__b/c.d/e---f_g",
            Some("_x"),
            None,
        );
        ok(
            "localhost:5000",
            hub,
            "library/localhost",
            Some("5000"),
            None,
        );
        ok(
            "docker.io/library/x:LATEST",
            hub,
            "library/x",
            Some("LATEST"),
            None,
        );
    }

    #[test]
    fn rejects_what_docker_rejects() {
        use ReferenceProblem::*;
        bad("", Empty);
        bad(":tag", Empty);
        bad("Nginx", Uppercase);
        bad("docker.io/Nginx", Uppercase);
        bad("a//b", EmptyComponent);
        bad("a/", EmptyComponent);
        bad("nginx:", InvalidTag(String::new()));
        bad("nginx:.x", InvalidTag(".x".into()));
        bad("nginx:-x", InvalidTag("-x".into()));
        bad(
            &format!("nginx:{}", "a".repeat(129)),
            InvalidTag("a".repeat(129)),
        );
        bad("nginx@", InvalidDigest(String::new()));
        bad("nginx@sha256:abc", InvalidDigest("sha256:abc".into()));
        bad(
            &format!("nginx@{}", D.to_uppercase().replace("SHA", "sha")),
            InvalidDigest(D.to_uppercase().replace("SHA", "sha")),
        );
        bad(
            &format!("nginx@md5:{}", "a".repeat(32)),
            UnsupportedDigestAlgorithm("md5".into()),
        );
        bad(&format!("nginx@{D}@{D}"), InvalidDigest(format!("{D}@{D}")));
        bad("a..b", InvalidComponent("a..b".into()));
        bad("a._b", InvalidComponent("a._b".into()));
        bad("a___b", InvalidComponent("a___b".into()));
        bad("-a", InvalidComponent("-a".into()));
        bad("a-", InvalidComponent("a-".into()));
        bad("ngi nx", InvalidComponent("ngi nx".into()));
        bad("héllo", InvalidComponent("héllo".into()));
        bad("-bad.io/x", InvalidDomain("-bad.io".into()));
        bad("host:port/x", InvalidDomain("host:port".into()));
        bad("[zz]:5000/x", InvalidDomain("[zz]:5000".into()));
        bad("[::1/x", InvalidDomain("[::1".into()));
        bad(&"a".repeat(64).replace('a', "0"), ImageIdNotName);
        bad(&format!("x/{}", "a".repeat(250)), TooLong(9 + 1 + 2 + 250));
    }

    #[test]
    fn methods() {
        let r = parse("nginx").unwrap();
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.familiar(), "docker.io/library/nginx:latest");
        assert_eq!(r.repo_key(), "docker.io/library/nginx");
        assert_eq!(r.manifest_ref(), "latest");
        let r = parse(&format!("localhost:5000/a@{D}")).unwrap();
        assert_eq!(r.api_host(), "localhost:5000");
        assert_eq!(r.manifest_ref(), D);
        assert_eq!(r.to_string(), format!("localhost:5000/a@{D}"));
    }

    #[test]
    fn picks_the_repo_digest_of_the_same_repository() {
        let other = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let digests = vec![
            format!("localhost:5000/nginx@{other}"),
            "garbage@@".to_string(),
            format!("nginx@{D}"),
        ];
        let want = Some(D.to_string());
        for r in [
            "nginx:1.25",
            "docker.io/library/nginx",
            "index.docker.io/nginx:x",
        ] {
            assert_eq!(
                digest_for_repository(&digests, &parse(r).unwrap()),
                want,
                "{r}"
            );
        }
        let local = parse("localhost:5000/nginx").unwrap();
        assert_eq!(
            digest_for_repository(&digests, &local),
            Some(other.to_string())
        );
        assert_eq!(
            digest_for_repository(&digests, &parse("ghcr.io/nginx").unwrap()),
            None
        );
        assert_eq!(digest_for_repository(&[], &local), None);
    }

    proptest! {
        #[test]
        fn never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(r) = parse(&s) {
                prop_assert_eq!(parse(&r.to_string()), Ok(r));
            }
        }

        #[test]
        fn round_trips_plausible_references(
            s in "([a-z0-9.:\\[\\]-]{1,12}/)?[a-z0-9._-]{1,10}(/[a-z0-9_-]{1,8}){0,2}(:[A-Za-z0-9_.-]{1,10})?(@sha256:[0-9a-f]{64})?"
        ) {
            if let Ok(r) = parse(&s) {
                prop_assert_eq!(parse(&r.to_string()), Ok(r));
            }
        }
    }
}
