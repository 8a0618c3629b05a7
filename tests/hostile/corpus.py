"""A corpus of hostile input for kitebox's decision path: what a pipeline author (every
`BUILDKITE_*` variable), a build creator, or a namespace writer (SSM names and values) can send.

Each entry is (id, value). Categories: control characters, NUL, ANSI/OSC terminal escapes,
unicode confusables and bidi overrides, `..` and path tricks, huge strings, credentials in URLs,
shell metacharacters. test_corpus.py runs every entry through preflight → decide → explain (text
and JSON) → audit record → hook mode's shell exports evaluated by a real bash.
"""

from __future__ import annotations

ESC = "\x1b"
# An operator pasting a failed job's variables into a terminal must not get its title, its
# clipboard (OSC 52) or its screen rewritten by what the author put there.
OSC_TITLE = f"{ESC}]0;pwned-title\x07"
OSC_CLIPBOARD = f"{ESC}]52;c;cm0gLXJmIH4K\x07"
CSI_CLEAR = f"{ESC}[2J{ESC}[H"
CSI_RED = f"{ESC}[31mred{ESC}[0m"
CANARY = "KITEBOX_CANARY_FILE"  # a shell command that would create $CANARY if evaluated
PASSWORD = "hunter2-repo-PASSWORD"  # must never be printed, wherever a URL carries it

# BUILDKITE_REPO: unusable ones must be refused at preflight (nothing read from SSM), usable
# ones normalised without their credentials.
REPO_URLS = [
    ("credentials-https", f"https://ci-bot:{PASSWORD}@github.com/acme/app.git"),
    ("credentials-ssh", f"ssh://git:{PASSWORD}@github.com:22/acme/app.git"),
    ("credentials-bad-path", f"https://u:{PASSWORD}@github.com/acme/../global"),
    ("credentials-ansi", f"https://u:{PASSWORD}@github.com/acme/{CSI_RED}.git"),
    ("dotdot-scp", "git@github.com:../../etc/passwd"),
    ("dotdot-into-global", "git@github.com:acme/../../global"),
    ("dotdot-segment", "https://github.com/acme/.."),
    ("dot-segment", "https://github.com/./acme/app.git"),
    ("empty-segment", "https://github.com/acme//app.git"),
    ("dotdot-in-host", "https://github..com/acme/app.git"),
    ("trailing-newline", "git@github.com:acme/app.git\n"),
    ("embedded-newline", "git@github.com:acme/app.git\nBUILDKITE_PIPELINE_SLUG=global"),
    ("nul", "git@github.com:acme/app.git\x00.evil"),
    ("ansi-in-path", f"git@github.com:acme/{CSI_RED}.git"),
    ("osc-in-host", f"https://{OSC_TITLE}github.com/acme/app.git"),
    ("tab", "git@github.com:acme/\tapp.git"),
    ("del", "git@github.com:acme/app\x7f.git"),
    ("c1-csi", "git@github.com:acme/app\x9b2J.git"),
    ("cyrillic-i-host", "https://gіthub.com/acme/app.git"),
    ("fullwidth-host", "https://ｇithub.com/acme/app.git"),
    ("bidi-override", "git@github.com:acme/app\u202egit.exe"),
    ("zero-width", "git@github.com:acme/a\u200bpp.git"),
    ("greek-path", "git@github.com:acme/αpp.git"),
    ("shell-subst-user", "$(touch /tmp/KITEBOX_CANARY)@github.com:acme/app.git"),
    ("backticks-path", "git@github.com:acme/`id`.git"),
    ("semicolon", "git@github.com:acme/app.git;rm -rf /"),
    ("pipe", "git@github.com:acme/app.git|id"),
    ("dollar-brace", "git@github.com:acme/${HOME}.git"),
    ("port-overflow", "https://github.com:99999/acme/app.git"),
    ("port-superscript", "https://github.com:²²/acme/app.git"),
    ("port-huge", "https://github.com:" + "9" * 5000 + "/acme/app.git"),
    ("ipv6", "https://[::1]/acme/app.git"),
    ("file-scheme", "file:///etc/passwd"),
    ("ext-scheme", "ext::sh -c touch% /tmp/KITEBOX_CANARY"),
    ("query", "https://github.com/acme/app.git?ref=x"),
    ("fragment", "https://github.com/acme/app.git#x"),
    ("imds", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("empty", ""),
    ("spaces", "   "),
    ("huge-path", "https://github.com/acme/" + "a" * 100_000 + ".git"),
    ("many-segments", "https://github.com/" + "/".join(["a"] * 5000)),
    ("huge-credentials", f"https://u:{PASSWORD}{'x' * 50_000}@github.com/acme/app.git"),
    ("only-scheme", "https://"),
    ("at-signs", "git@@github.com:acme/app.git"),
    ("global-as-repo", "git@global:x/y.git"),
]

# BUILDKITE_PIPELINE_SLUG: anything but [a-z0-9][a-z0-9_-]{0,99} (and not `global`) is refused.
PIPELINE_SLUGS = [
    ("global", "global"),
    ("Global", "Global"),
    ("dotdot-global", "../global"),
    ("slash", "app/../global"),
    ("ansi", f"app{CSI_CLEAR}"),
    ("osc", f"app{OSC_TITLE}"),
    ("newline", "app\nglobal"),
    ("nul", "app\x00"),
    ("too-long", "a" * 101),
    ("huge", "a" * 100_000),
    ("empty", ""),
    ("shell", "app;id"),
    ("subst", "$(id)"),
    ("cyrillic-a", "аpp"),
    ("fullwidth", "ａpp"),
    ("trailing-space", "app "),
    ("leading-dash", "-app"),
    ("bidi", "app\u202e"),
]

# env/<name> parameters a namespace writer could create (SSM allows [a-zA-Z0-9_.-/]; the
# in-memory store lets the corpus go further). Each is either refused, or a plain shell name
# that no reserved list covers.
ENV_NAMES = [
    ("path", "env/path"),
    ("PATH", "env/PATH"),
    ("ld-preload", "env/ld-preload"),
    ("bash-env", "env/BASH_ENV"),
    ("ifs", "env/ifs"),
    ("prompt-command", "env/prompt_command"),
    ("git-ssh-command", "env/git-ssh-command"),
    ("git-config-key", "env/GIT_CONFIG_KEY_0"),
    ("git-config-count", "env/git_config_count"),
    ("askpass", "env/ssh-askpass"),
    ("ssh-auth-sock", "env/ssh_auth_sock"),
    ("buildkite-token", "env/buildkite-agent-access-token"),
    ("kitebox-setting", "env/kitebox_base_path"),
    ("aws-container-uri", "env/aws-container-credentials-full-uri"),
    ("dot", "env/a.b"),
    ("nested", "env/a/b"),
    ("digit-first", "env/1x"),
    ("empty", "env/"),
    ("dotdot", "env/../ssh/key"),
    ("ansi", f"env/x{CSI_RED}"),
    ("newline", "env/x\ny"),
    ("nul", "env/x\x00"),
    ("space", "env/a b"),
    ("shell", "env/x;id"),
    ("dotless-i", "env/ıd"),  # 'ı'.upper() == 'I': becomes ID, an ordinary name
    ("long-s-reserved", "env/baſh_env"),  # 'ſ'.upper() == 'S': becomes BASH_ENV, reserved
    ("ligature", "env/ﬅate"),  # 'ﬅ'.upper() == 'ST'
    ("kelvin", "env/\u212aey"),  # KELVIN SIGN: 'K'.upper() is not ASCII
    ("longest", "env/" + "A" * 2000),  # SSM's names stop at 2048 characters
]

# Secret values (a namespace writer's): each reaches the job byte-exact or is refused by name,
# and none is ever printed or evaluated.
ENV_VALUES = [
    ("command-subst", f"$(touch {CANARY})"),
    ("backticks", f"`touch {CANARY}`"),
    ("quote-break", f"'; touch {CANARY}; echo '"),
    ("double-quote-break", f'"; touch {CANARY}; echo "'),
    ("newline-command", f"x\ntouch {CANARY}\n"),
    ("crlf", "a\r\nb\r\n"),
    ("ansi", CSI_RED),
    ("osc-clipboard", OSC_CLIPBOARD),
    ("bidi", "abc\u202edef"),
    ("bom", "\ufeffvalue"),
    ("emoji", "✨😀"),
    ("dollar-brace", "${IFS}${PATH}"),
    ("backslashes", "\\\\n\\x41\\"),
    ("option-like", "-e"),
    ("only-quote", "'"),
    ("printf-format", "%s%n%x"),
    ("tabs", "\t\t"),
    ("empty", ""),
    ("spaces", "  leading and trailing  "),
    ("nul", "before\x00after"),
    ("over-64k", "v" * (64 * 1024 + 1)),
    ("exactly-64k", "v" * (64 * 1024)),
    ("multibyte-over-64k", "é" * (32 * 1024 + 1)),
]

# Job identity fields that are printed or recorded: creator, teams, job id, build number, source,
# branch, queue... Every one is author input.
IDENTITY_VALUES = [
    ("ansi-clear", CSI_CLEAR),
    ("osc-title", OSC_TITLE),
    ("osc-clipboard", OSC_CLIPBOARD),
    ("c1-csi", "\x9b2J"),
    ("bell", "a\x07b"),
    ("carriage-return", "real name\rkitebox: ALLOWED"),
    ("newline", "Ada\nVerdict: ALLOWED"),
    ("nul", "Ada\x00Lovelace"),
    ("bidi", "Ada\u202eecalevol"),
    ("huge", "A" * 100_000),
    ("shell", "$(touch KITEBOX_CANARY)`id`"),
]
