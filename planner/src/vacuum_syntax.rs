//! PostgreSQL's VACUUM grammar reduced to what sqlparser parses.
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

/// Rewrites every statement of `tokens` that starts with VACUUM; others pass unchanged.
pub(crate) fn reduce_vacuum(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut statement = Vec::new();
    for t in tokens {
        if t.token == Token::SemiColon {
            out.extend(reduce_statement(std::mem::take(&mut statement)));
            out.push(t);
        } else {
            statement.push(t);
        }
    }
    out.extend(reduce_statement(statement));
    out
}

fn is_space(t: &TokenWithSpan) -> bool {
    matches!(t.token, Token::Whitespace(_))
}

fn reduce_statement(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let Some(first) = tokens.iter().position(|t| !is_space(t)) else {
        return tokens;
    };
    if !matches!(&tokens[first].token, Token::Word(w) if w.keyword == Keyword::VACUUM) {
        return tokens;
    }
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
}
