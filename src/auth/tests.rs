//! The token file's parser, the roles' permissions, and `role_of` against a map of the
//! configured tokens (proptest).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const READ: &str = "read-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

fn refusal(text: &str) -> String {
    match Tokens::parse(text) {
        Ok(t) => panic!("accepted {t:?}:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_good_file_parses_with_comments_blank_lines_and_any_white_space() {
    let text = format!(
        "# clients\n\nread {READ}\n  write\t{WRITE}  \r\n   # the operator\nadmin   {ADMIN}\n"
    );
    let tokens = Tokens::parse(&text).unwrap();
    assert_eq!(tokens.len(), 3);
    assert_eq!(tokens.role_of(READ.as_bytes()), Some(Role::Read));
    assert_eq!(tokens.role_of(WRITE.as_bytes()), Some(Role::Write));
    assert_eq!(tokens.role_of(ADMIN.as_bytes()), Some(Role::Admin));
    assert_eq!(tokens.role_of(b""), None);
    assert_eq!(tokens.role_of(b"read-token-012345678"), None);
    assert_eq!(tokens.role_of(format!("{READ} ").as_bytes()), None);
}

#[test]
fn each_bad_line_is_refused_with_its_number_and_never_shows_the_token() {
    let cases = [
        (
            format!("read {READ}\nwrite\n"),
            "line 2: expected `ROLE TOKEN`, found 1 fields",
        ),
        (
            format!("\n\nread {READ} # mine\n"),
            "line 3: expected `ROLE TOKEN`, found 4 fields",
        ),
        (
            format!("# x\nreader {READ}\n"),
            "line 2: unknown role \"reader\"",
        ),
        (format!("Admin {ADMIN}\n"), "line 1: unknown role \"Admin\""),
        (
            format!("read {READ}\nadmin 0123456789abcde\n"),
            "line 2: the token is 15 bytes, at least 16 are needed",
        ),
        (
            format!("read {READ}\nwrite token-with-é-in-it-xx\n"),
            "line 2: the token has characters other than visible ASCII",
        ),
        (
            format!("read {READ}\n\nwrite {WRITE}\nadmin {READ}\n"),
            "line 4: the same token as line 1",
        ),
        ("# nothing here\n\n".to_owned(), "no tokens"),
    ];
    for (text, wanted) in cases {
        let err = refusal(&text);
        assert!(err.contains(wanted), "{text:?}: {err}");
        for token in [READ, WRITE, ADMIN] {
            assert!(!err.contains(token), "the error shows a token: {err}");
        }
    }
}

#[test]
fn load_names_the_file_and_the_line() {
    let path = std::env::temp_dir().join(format!("peercache-auth-unit-{}", std::process::id()));
    std::fs::write(&path, format!("read {READ}\nroot {ADMIN}\n")).unwrap();
    let err = Tokens::load(&path).unwrap_err().to_string();
    std::fs::write(&path, format!("admin {ADMIN}\n")).unwrap();
    let good = Tokens::load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(
        err.contains(&format!(
            "auth file {}: line 2: unknown role",
            path.display()
        )),
        "{err}"
    );
    assert_eq!(good.role_of(ADMIN.as_bytes()), Some(Role::Admin));
    let missing = Tokens::load(&path).unwrap_err().to_string();
    assert!(missing.contains(&path.display().to_string()), "{missing}");
}

#[test]
fn each_role_allows_exactly_what_it_should() {
    use Action::*;
    let allowed = |role: Role| -> Vec<Action> {
        [Read, Write, Admin]
            .into_iter()
            .filter(|&a| role.allows(a))
            .collect()
    };
    assert_eq!(allowed(Role::Read), [Read]);
    assert_eq!(allowed(Role::Write), [Read, Write]);
    assert_eq!(allowed(Role::Admin), [Read, Write, Admin]);
}

#[test]
fn authorize_tells_missing_invalid_and_forbidden_apart() {
    let tokens = Tokens::parse(&format!("read {READ}\nadmin {ADMIN}\n")).unwrap();
    assert_eq!(tokens.authorize(None, Action::Read), Err(Refusal::Missing));
    assert_eq!(
        tokens.authorize(Some(WRITE.as_bytes()), Action::Read),
        Err(Refusal::Invalid)
    );
    assert_eq!(
        tokens.authorize(Some(READ.as_bytes()), Action::Write),
        Err(Refusal::Forbidden)
    );
    assert_eq!(
        tokens.authorize(Some(READ.as_bytes()), Action::Read),
        Ok(Role::Read)
    );
    assert_eq!(
        tokens.authorize(Some(ADMIN.as_bytes()), Action::Write),
        Ok(Role::Admin)
    );
    assert!(Refusal::Missing.is_unauthorized() && Refusal::Invalid.is_unauthorized());
    assert!(!Refusal::Forbidden.is_unauthorized());
}

#[test]
fn debug_shows_a_count_not_the_tokens() {
    let tokens = Tokens::parse(&format!("read {READ}\n")).unwrap();
    let shown = format!("{tokens:?}");
    assert_eq!(shown, "Tokens { count: 1 }");
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Read), Just(Role::Write), Just(Role::Admin)]
}

/// A token as the file allows: 16 to 40 bytes of visible ASCII.
fn token() -> impl Strategy<Value = String> {
    "[!-~]{16,40}"
}

proptest! {
    #[test]
    fn role_of_finds_exactly_the_configured_tokens(
        configured in prop::collection::btree_map(token(), role(), 1..8),
        others in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..48), 0..16),
    ) {
        let text: String = configured
            .iter()
            .map(|(t, r)| format!("{} {t}\n", r.as_str()))
            .collect();
        let tokens = Tokens::parse(&text).unwrap();
        prop_assert_eq!(tokens.len(), configured.len());
        let known: BTreeMap<Vec<u8>, Role> =
            configured.iter().map(|(t, r)| (t.clone().into_bytes(), *r)).collect();
        let model = |b: &[u8]| known.get(b).copied();
        for (t, r) in &configured {
            prop_assert_eq!(tokens.role_of(t.as_bytes()), Some(*r));
            // One byte short or one byte over is another token, or none.
            let short = &t.as_bytes()[..t.len() - 1];
            prop_assert_eq!(tokens.role_of(short), model(short));
            let over = format!("{t}x");
            prop_assert_eq!(tokens.role_of(over.as_bytes()), model(over.as_bytes()));
        }
        for other in &others {
            prop_assert_eq!(tokens.role_of(other), model(other));
        }
    }
}
