//! psql against Shoal: a scripted session whose output must match PostgreSQL's.

use std::process::Command;

use shoal_tests::{Node, PASSWORD, USER};

const SCRIPT: &str = r#"create table city (id int primary key, name varchar(40) not null, population bigint);
insert into city values (1, 'Lyon', 513000), (2, 'Nantes', 314000), (3, 'Lille', NULL);
select id, name, population from city order by id;
select count(*), sum(population) from city;
update city set population = 236000 where id = 3;
select name from city where population > 300000 order by name;
begin;
delete from city where id = 1;
rollback;
select count(*) from city;
"#;

const EXPECTED: &str = "CREATE TABLE
INSERT 0 3
 id |  name  | population 
----+--------+------------
  1 | Lyon   |     513000
  2 | Nantes |     314000
  3 | Lille  |           
(3 rows)

 count |  sum   
-------+--------
     3 | 827000
(1 row)

UPDATE 1
  name  
--------
 Lyon
 Nantes
(2 rows)

BEGIN
DELETE 1
ROLLBACK
 count 
-------
     3
(1 row)

";

#[test]
fn psql_session_matches_postgres_output() {
    if Command::new("psql").arg("--version").output().is_err() {
        assert!(std::env::var("CI").is_err(), "CI must have psql installed");
        return;
    }
    let node = Node::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("session.sql");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = Command::new("psql")
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &node.port.to_string(),
            "-U",
            USER,
            "-d",
            "shoal",
            "-f",
        ])
        .arg(&script)
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "psql errors: {stderr}");
    assert_eq!(stdout, EXPECTED);
}
