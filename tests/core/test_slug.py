"""Repository URL → repo slug and normal form (src/kitebox/core/slug.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kitebox.core.slug import MAX_SLUG_LENGTH, RepoLocation, normalise_repo, parse_repo, repo_slug
from kitebox.errors import BadInputError

SLUG_CHARS = re.compile(r"[A-Za-z0-9._-]+")
PASSWORD = "hunter2-PASSWORD-x9q"


class TestSeedExamples:
    @pytest.mark.parametrize(
        ("url", "slug"),
        [
            ("https://github.com/a/b.git", "github.com_a_b.git"),
            ("git@github.com:a/b.git", "github.com_a_b.git"),
            ("ssh://git@github.com/a/b.git", "github.com_a_b.git"),
            ("ssh://git@github.com:22/a/b.git", "github.com-22_a_b.git"),
            ("https://github.com:8080/~a/b.git", "github.com-8080__a_b.git"),
        ],
        ids=["https", "scp", "ssh-no-port", "ssh-port-22", "https-port-tilde"],
    )
    def test_seed_examples(self, url, slug):
        """The seed plugin's documented slugs are reproduced exactly (seed examples, buildkite-contract.md)."""
        assert repo_slug(url) == slug

    @pytest.mark.parametrize(
        ("url", "slug"),
        [
            ("git@my-gitlab.example.com:g/r.git", "my-gitlab.example.com_g_r.git"),
            ("https://my-gitlab.example.com/g/r.git", "my-gitlab.example.com_g_r.git"),
            ("ssh://git@my-git-lab.example.com:2222/g/r.git", "my-git-lab.example.com-2222_g_r.git"),
        ],
        ids=["scp", "https", "ssh-port"],
    )
    def test_hyphenated_hosts_are_kept_whole(self, url, slug):
        """A hyphenated host is not mangled, unlike the seed's regex (buildkite-contract.md, seed conventions)."""
        assert repo_slug(url) == slug


class TestParse:
    @pytest.mark.parametrize(
        ("url", "location"),
        [
            ("https://github.com/a/b.git", RepoLocation("https", "github.com", None, ("a", "b.git"))),
            ("git@github.com:a/b.git", RepoLocation("ssh", "github.com", None, ("a", "b.git"))),
            ("github.com:a/b.git", RepoLocation("ssh", "github.com", None, ("a", "b.git"))),
            ("ssh://git@GitHub.COM:2222/A/B.git", RepoLocation("ssh", "github.com", 2222, ("A", "B.git"))),
            ("HTTPS://github.com/a/b/", RepoLocation("https", "github.com", None, ("a", "b"))),
            ("git://example.org:9418/x.git", RepoLocation("git", "example.org", 9418, ("x.git",))),
            ("git+ssh://git@example.org/x", RepoLocation("git+ssh", "example.org", None, ("x",))),
            ("git@example.org:/abs/x.git", RepoLocation("ssh", "example.org", None, ("abs", "x.git"))),
        ],
        ids=["https", "scp", "scp-no-user", "ssh-port-case", "upper-scheme-trailing-slash", "git-proto", "git+ssh", "scp-abs"],
    )
    def test_parse_repo_forms(self, url, location):
        """Each accepted URL form parses to scheme, lower-cased host, port and path segments."""
        assert parse_repo(url) == location

    @pytest.mark.parametrize(
        "url",
        [
            f"https://deploy:{PASSWORD}@github.com/a/b.git",
            f"https://deploy:{PASSWORD}@github.com:8443/a/b.git",
            f"ssh://git:{PASSWORD}@github.com/a/b.git",
            f"https://deploy:{PASSWORD}@@github.com/a/b.git",
        ],
        ids=["https", "https-port", "ssh", "double-at"],
    )
    def test_user_and_password_are_dropped(self, url):
        """User and password never reach the parsed location or the slug."""
        location = parse_repo(url)
        assert location.host == "github.com"
        assert PASSWORD not in repr(location)
        assert PASSWORD not in repo_slug(url)
        assert "deploy" not in repo_slug(url)

    @pytest.mark.parametrize(
        "url",
        [
            f"https://deploy:{PASSWORD}@github.com/a/../b.git",
            f"https://deploy:{PASSWORD}@github.com:99999/a/b.git",
            f"ftp://deploy:{PASSWORD}@github.com/a/b.git",
            f"https://deploy:{PASSWORD}@github.com/a/b.git?x=1",
            f"https://deploy:{PASSWORD}@github.com/a/b c.git",
            f"https://deploy:{PASSWORD}@github.com/a/b\n.git",
            f"https://deploy:{PASSWORD}@git_hub.com/a/b.git",
            f"https://deploy:{PASSWORD}/x@github.com/a/b.git",
            f"deploy:{PASSWORD}@github.com:a/b.git",
            f"https://deploy:{PASSWORD}@github.com/a/b$.git",
        ],
        ids=["dotdot", "bad-port", "ftp", "query", "space", "newline", "bad-host", "slash-in-password", "scp-password", "bad-char"],
    )
    def test_password_never_in_error(self, url):
        """A refused URL's error never contains its password (nor the whole URL)."""
        with pytest.raises(BadInputError) as caught:
            repo_slug(url)
        assert PASSWORD not in str(caught.value)
        assert url not in str(caught.value)
        assert str(caught.value).startswith("BUILDKITE_REPO is not a repository URL kitebox can use")


class TestSlugPorts:
    @pytest.mark.parametrize(
        ("url", "slug"),
        [
            ("ssh://git@github.com:2222/a/b.git", "github.com-2222_a_b.git"),
            ("ssh://git@github.com:1/a/b.git", "github.com-1_a_b.git"),
            ("ssh://git@github.com:65535/a/b.git", "github.com-65535_a_b.git"),
            ("https://github.com:443/a/b.git", "github.com-443_a_b.git"),
            ("git@github.com:a/b.git", "github.com_a_b.git"),
            ("git@github.com:22/a/b.git", "github.com_22_a_b.git"),
        ],
        ids=["ssh-2222", "port-1", "port-65535", "https-explicit-443", "scp", "scp-digits-are-path"],
    )
    def test_ports_in_slug(self, url, slug):
        """An explicit port is kept as `-<port>` after the host (seed format); scp-like addresses have no port."""
        assert repo_slug(url) == slug


HOSTILE = [
    ("", "empty"),
    ("   ", "whitespace"),
    ("\t", "tab"),
    ("https://github.com/a/../b.git", "dotdot-segment"),
    ("https://github.com/../b.git", "leading-dotdot"),
    ("git@github.com:../b.git", "scp-dotdot"),
    ("git@github.com:a/..", "scp-trailing-dotdot"),
    ("https://github.com/a/./b.git", "dot-segment"),
    ("https://github.com/./b.git", "leading-dot"),
    ("https://github.com/a//b.git", "empty-segment"),
    ("git@github.com:a//b.git", "scp-empty-segment"),
    ("https://github.com/a/b\n.git", "newline"),
    ("https://github.com/a/b.git\n", "trailing-newline"),
    ("https://github.com/a/b\x00.git", "nul"),
    ("https://github.com/a/b\x1b[31m.git", "escape"),
    ("https://github.com/a/b\x7f.git", "del"),
    ("https://github.com/a/b\u00a0.git", "nbsp"),
    ("https://github.com/a/b.git?ref=main", "query"),
    ("https://github.com/a/b.git#frag", "fragment"),
    ("https://github.com:0/a/b.git", "port-0"),
    ("https://github.com:65536/a/b.git", "port-65536"),
    ("https://github.com:abc/a/b.git", "port-abc"),
    ("https://github.com:/a/b.git", "port-empty"),
    ("https://github.com:-1/a/b.git", "port-negative"),
    ("file:///srv/x.git", "file-scheme"),
    ("ftp://example.org/x.git", "ftp-scheme"),
    ("javascript://example.org/x", "js-scheme"),
    ("https://[::1]/a/b.git", "ipv6"),
    ("https://[::1]:22/a/b.git", "ipv6-port"),
    ("git@[::1]:a/b.git", "scp-ipv6"),
    ("/srv/x.git", "local-path"),
    ("./x.git", "relative-path"),
    ("x.git", "bare-name"),
    ("https://github..com/a/b.git", "host-dotdot"),
    ("git@..:a/b.git", "scp-host-dotdot"),
    ("https://-github.com/a/b.git", "host-leading-hyphen"),
    ("https://github.com./a/b.git", "host-trailing-dot"),
    ("https://git_hub.com/a/b.git", "host-underscore"),
    ("https://gith\u00fcb.com/a/b.git", "host-unicode"),
    ("https:///a/b.git", "host-empty"),
    ("https://github.com", "no-path"),
    ("https://github.com/", "root-path"),
    ("git@github.com:", "scp-empty-path"),
    ("https://github.com/a/b$c.git", "dollar"),
    ("https://github.com/a/b%2e.git", "percent"),
    ("https://github.com/a/b:c.git", "colon"),
    ("https://github.com/a/b@c.git", "at"),
    ("https://github.com/a/b\\c.git", "backslash"),
    ("https://github.com/a/b*.git", "star"),
    ("https://github.com/a/\u00e9.git", "unicode-path"),
    ("https://github.com/" + "a" * 600, "too-long"),
]


class TestHostile:
    @pytest.mark.parametrize("url", [u for u, _ in HOSTILE], ids=[i for _, i in HOSTILE])
    def test_hostile_input_is_refused(self, url):
        """Author-controlled BUILDKITE_REPO that could escape or confuse a namespace is refused (buildkite-contract.md, access variables)."""
        with pytest.raises(BadInputError):
            repo_slug(url)

    @pytest.mark.parametrize("url", [u for u, _ in HOSTILE], ids=[i for _, i in HOSTILE])
    def test_hostile_input_is_refused_by_normalise(self, url):
        """normalise_repo refuses exactly what repo_slug refuses for the hostile corpus, except length."""
        if len(url) > 600:
            assert normalise_repo(url).startswith("github.com/")
        else:
            with pytest.raises(BadInputError):
                normalise_repo(url)

    def test_slug_at_length_limit(self):
        """A slug of exactly MAX_SLUG_LENGTH characters is accepted, one more is refused."""
        fill = MAX_SLUG_LENGTH - len("github.com_")
        assert len(repo_slug("https://github.com/" + "a" * fill)) == MAX_SLUG_LENGTH
        with pytest.raises(BadInputError, match="longer than 512"):
            repo_slug("https://github.com/" + "a" * (fill + 1))
    def test_unicode_digit_port_is_bad_input(self):
        """A port written with a non-ASCII digit is refused with BadInputError, not a crash."""
        with pytest.raises(BadInputError):
            repo_slug("ssh://git@github.com:\u00b2/a/b.git")
    def test_huge_port_is_bad_input(self):
        """A port with thousands of digits is refused with BadInputError, not a crash."""
        with pytest.raises(BadInputError):
            repo_slug("ssh://git@github.com:" + "9" * 5000 + "/a/b.git")
    def test_slug_never_contains_dotdot(self):
        """A path segment containing '..' is refused, so no slug contains '..' (slug.py docstring)."""
        with pytest.raises(BadInputError):
            repo_slug("https://github.com/a..b/c.git")


class TestNormalise:
    @pytest.mark.parametrize(
        "url",
        [
            "https://github.com/acme/app.git",
            "https://github.com/acme/app",
            "https://github.com:443/acme/app.git",
            "http://github.com:80/acme/app.git",
            "git@github.com:acme/app.git",
            "github.com:acme/app",
            "ssh://git@github.com/acme/app.git",
            "ssh://git@github.com:22/acme/app.git",
            "git+ssh://git@GITHUB.com/acme/app.git",
            "git://github.com:9418/acme/app.git",
            f"https://deploy:{PASSWORD}@github.com/acme/app.git",
            "https://github.com/acme/app.git/",
        ],
        ids=["https", "https-no-git", "https-443", "http-80", "scp", "scp-no-user", "ssh", "ssh-22", "git+ssh-upper-host", "git-9418", "with-password", "trailing-slash"],
    )
    def test_forms_of_one_repository_compare_equal(self, url):
        """Scheme, user, password, a default port, host case and a trailing .git do not change the normal form."""
        assert normalise_repo(url) == "github.com/acme/app"

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            ("https://github.com/acme/app.git", "https://gitlab.com/acme/app.git"),
            ("https://github.com/acme/app.git", "https://github.com/acme/other.git"),
            ("https://github.com/acme/app.git", "https://github.com/evil/app.git"),
            ("https://github.com/acme/app.git", "https://github.com/acme/app/x.git"),
            ("https://github.com/acme/app.git", "https://github.com/Acme/App.git"),
            ("https://github.com/acme/app.git", "https://github.com:8443/acme/app.git"),
            ("ssh://git@github.com:2222/acme/app.git", "git@github.com:acme/app.git"),
            ("https://github.com:22/acme/app.git", "ssh://git@github.com:22/acme/app.git"),
        ],
        ids=["host", "repo", "owner", "deeper-path", "path-case", "non-default-port", "ssh-non-default-port", "port-default-for-other-scheme"],
    )
    def test_different_repositories_differ(self, a, b):
        """Different hosts, paths or non-default ports give different normal forms."""
        assert normalise_repo(a) != normalise_repo(b)

    def test_non_default_port_is_kept(self):
        """A non-default port is part of the normal form as host:port."""
        assert normalise_repo("ssh://git@example.org:2222/a/b.git") == "example.org:2222/a/b"


# --- property tests -------------------------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hosts = st.lists(_label, min_size=1, max_size=4).map(".".join)
ports = st.integers(min_value=1, max_value=65535)
segments = st.lists(
    st.from_regex(r"[A-Za-z0-9._~-]{1,12}", fullmatch=True).filter(lambda s: s != "." and ".." not in s),
    min_size=1,
    max_size=5,
)
url_noise = st.text(alphabet="abc019./:@~_-?#%[] \n\x00\x1b", max_size=30)
url_like = st.builds(
    lambda scheme, user, host, port, path: f"{scheme}{user}{host}{port}{path}",
    st.sampled_from(["https://", "ssh://", "git://", "file://", "", "HTTPS://", "git+ssh://"]),
    st.sampled_from(["", "git@", "u:p@", "@", "a@b@"]),
    st.one_of(hosts, url_noise),
    st.one_of(st.just(""), ports.map(lambda p: f":{p}"), url_noise.map(lambda n: ":" + n)),
    st.one_of(segments.map(lambda s: "/" + "/".join(s)), url_noise),
)


class TestProperties:
    @given(st.one_of(st.text(), url_like))
    @settings(max_examples=300)
    def test_any_text_gives_bad_input_or_a_safe_slug(self, text):
        """For any text, repo_slug raises BadInputError or returns one safe SSM path component, never `global`."""
        try:
            slug = repo_slug(text)
        except BadInputError:
            return
        assert SLUG_CHARS.fullmatch(slug)
        assert "/" not in slug
        assert slug not in (".", "..", "global")
        assert slug[0].isalnum()
        assert 0 < len(slug) <= MAX_SLUG_LENGTH

    @given(hosts, segments, st.one_of(st.none(), ports))
    def test_url_forms_agree(self, host, segs, port):
        """https://, ssh:// and scp-like forms of one repository give the same, deterministic slug."""
        path = "/".join(segs)
        expected_head = host if port is None else f"{host}-{port}"
        expected = expected_head + "_" + "_".join(s.replace("~", "_") for s in segs)
        hostport = host if port is None else f"{host}:{port}"
        forms = [f"https://{hostport}/{path}", f"ssh://git@{hostport}/{path}"]
        if port is None:
            forms.append(f"git@{host}:{path}")
        slugs = {repo_slug(form) for form in forms}
        assert slugs == {expected}
        assert repo_slug(forms[0]) == repo_slug(forms[0])

    @given(hosts, segments)
    def test_normal_form_agrees_across_forms(self, host, segs):
        """The default-port https, ssh:// and scp-like forms of one repository share one normal form."""
        path = "/".join(segs)
        forms = [
            f"https://{host}/{path}",
            f"https://{host}:443/{path}",
            f"ssh://git@{host}/{path}",
            f"ssh://git@{host}:22/{path}",
            f"git@{host}:{path}",
        ]
        if not path.endswith((".git", ".")):  # 'x.' + '.git' would hold '..', which is refused
            forms.append(f"git@{host}:{path}.git")
        assert len({normalise_repo(form) for form in forms}) == 1
