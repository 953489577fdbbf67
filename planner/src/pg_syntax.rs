//! PostgreSQL statement forms that sqlparser does not parse, rewritten at the token level into
//! forms it does, before parsing.
//!
//! - `ABORT` is PostgreSQL's synonym of `ROLLBACK`.
//! - COPY's boolean options take `on`/`off` in PostgreSQL (`pgbench -i` sends
//!   `copy pgbench_accounts from stdin with (freeze on)`); sqlparser knows `true`/`false` only.
//! - VACUUM: see [`reduce_vacuum`].
//!
//! sqlparser's VACUUM is Redshift's (`VACUUM [FULL] [table]`): PostgreSQL's
//! `VACUUM (ANALYZE, VERBOSE) t`, `VACUUM ANALYZE t` or `VACUUM FREEZE a, b (x)` are syntax
//! errors there, and `pgbench -i` sends `vacuum analyze pgbench_branches`. Shoal has no heap
//! to vacuum and keeps no planner statistics, so VACUUM (with or without ANALYZE) does
//! nothing; what matters is that PostgreSQL's forms are accepted. The option list, the option
//! words and everything after the first table name are dropped before parsing.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

/// `FULL`, `FREEZE`, `VERBOSE`, `ANALYZE` or `ANALYSE`, unquoted.
fn is_option_word(token: &Token) -> bool {
    const OPTIONS: [Keyword; 4] = [
        Keyword::FULL,
        Keyword::FREEZE,
        Keyword::VERBOSE,
        Keyword::ANALYZE,
    ];
    matches!(token, Token::Word(w) if w.quote_style.is_none()
        && (OPTIONS.contains(&w.keyword) || w.value.eq_ignore_ascii_case("analyse")))
}

/// Rewrites each statement of `tokens` by its first word; others pass unchanged.
pub(crate) fn rewrite_statements(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut statement = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            out.extend(rewrite_statement(std::mem::take(&mut statement)));
            out.push(t);
        } else {
            statement.push(t);
        }
    }
    out.extend(rewrite_statement(statement));
    out
}

fn is_space(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

fn rewrite_statement(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let Some(first) = tokens.iter().position(|t| !is_space(t)) else {
        return tokens;
    };
    let Token::Word(word) = &tokens[first].token else {
        return tokens;
    };
    match word.keyword {
        Keyword::ABORT => {
            tokens[first].token = Token::make_keyword("ROLLBACK");
            tokens
        }
        Keyword::VACUUM => reduce_vacuum(tokens, first),
        Keyword::COPY => {
            copy_boolean_words(&mut tokens);
            tokens
        }
        _ => tokens,
    }
}

/// `on`/`off` as the value of a COPY option (inside its parenthesized list) become
/// `true`/`false`.
fn copy_boolean_words(tokens: &mut [TokenWithSpan]) {
    let mut depth = 0;
    for t in tokens.iter_mut() {
        match &t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth == 1 && w.quote_style.is_none() => {
                if w.keyword == Keyword::ON {
                    t.token = Token::make_keyword("TRUE");
                } else if w.keyword == Keyword::OFF {
                    t.token = Token::make_keyword("FALSE");
                }
            }
            _ => {}
        }
    }
}

/// `VACUUM [(options)] [FULL] [FREEZE] [VERBOSE] [ANALYZE] [table [(columns)] [, ...]]`
/// becomes `VACUUM [table]`.
fn reduce_vacuum(tokens: Vec<TokenWithSpan>, first: usize) -> Vec<TokenWithSpan> {
    let mut rest = tokens
        .into_iter()
        .skip(first + 1)
        .filter(|t| !is_space(t))
        .peekable();
    // `VACUUM (option [value], ...)`
    if rest.peek().is_some_and(|t| t.token == Token::LParen) {
        let mut depth = 0;
        for t in rest.by_ref() {
            match t.token {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                break;
            }
        }
    }
    while rest.peek().is_some_and(|t| is_option_word(&t.token)) {
        rest.next();
    }
    // The first table's (possibly qualified) name; a column list or more tables follow it.
    // The parser skips whitespace tokens, so none are put back.
    let name = rest.take_while(|t| matches!(t.token, Token::Word(_) | Token::Period));
    std::iter::once(TokenWithSpan::wrap(Token::make_keyword("VACUUM")))
        .chain(name)
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::parse_sql;

    fn vacuum_table(sql: &str) -> Option<String> {
        match parse_sql(sql).expect(sql).remove(0) {
            datafusion::sql::sqlparser::ast::Statement::Vacuum(v) => {
                v.table_name.map(|t| t.to_string())
            }
            other => panic!("{sql} parsed as {other}"),
        }
    }

    #[test]
    fn postgres_vacuum_forms_parse() {
        assert_eq!(vacuum_table("VACUUM"), None);
        assert_eq!(
            vacuum_table("vacuum analyze pgbench_branches"),
            Some("pgbench_branches".into())
        );
        assert_eq!(
            vacuum_table("VACUUM (ANALYZE, VERBOSE false) s.t (a, b), u"),
            Some("s.t".into())
        );
        assert_eq!(
            vacuum_table("VACUUM FULL FREEZE VERBOSE ANALYSE t"),
            Some("t".into())
        );
        assert_eq!(vacuum_table("VACUUM \"full\""), Some("\"full\"".into()));
        let two = parse_sql("VACUUM ANALYZE a; SELECT 1").expect("two statements");
        assert_eq!(two.len(), 2);
        assert!(parse_sql("VACUUM a b").is_err());
    }

    #[test]
    fn copy_options_take_on_and_off() {
        use datafusion::sql::sqlparser::ast::{CopyOption, Statement};
        let sql = "copy pgbench_accounts from stdin with (freeze on, header off, format csv)";
        let Statement::Copy { options, .. } = parse_sql(sql).expect(sql).remove(0) else {
            panic!("{sql} is a COPY");
        };
        assert!(options.contains(&CopyOption::Freeze(true)), "{options:?}");
        assert!(options.contains(&CopyOption::Header(false)), "{options:?}");
    }

    #[test]
    fn abort_is_rollback() {
        let stmt = parse_sql("abort").expect("abort").remove(0);
        assert!(matches!(
            stmt,
            datafusion::sql::sqlparser::ast::Statement::Rollback { .. }
        ));
    }
}
