//! Native evaluation of the simple conditions most rules are: variables and literals joined by
//! comparisons, `==`/`!=`, `&&`, `||` and `!`.
//!
//! Why: the `cel` crate (0.15) interprets a condition through boxed values and builds an error
//! value for every comparison it makes, even one that succeeds: ~2,000 instructions per
//! condition, the largest part of scoring a user in batch. The CEL program stays the rule's
//! meaning: a condition is compiled only if every node is in this subset (anything else — a
//! macro, a function, arithmetic, a `u` literal — runs in the interpreter), the subset follows
//! the interpreter's own semantics (heterogeneous numeric equality, errors absorbed by `&&`/`||`
//! as CEL specifies), each rule is checked against the interpreter when it loads, and a test
//! compares the two on thousands of random conditions and inputs.

use std::cmp::Ordering;

use cel::common::ast::{operators, Expr, IdedExpr, LiteralValue};

use super::Source;

/// A value as a condition sees it; strings borrow from the request or the condition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// The interpreter's value for it.
    pub(crate) fn to_cel(self) -> cel::objects::Value {
        use cel::objects::Value;
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(b),
            Scalar::Int(i) => Value::Int(i),
            Scalar::Float(x) => Value::Float(x),
            Scalar::Str(s) => Value::String(std::sync::Arc::new(s.to_string())),
        }
    }
}

/// The interpreter would have returned an error here. Which error does not matter: a condition
/// that fails does not hit, and is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failed;

#[derive(Debug)]
pub(crate) enum Condition {
    Literal(Literal),
    Variable(Source),
    /// `==`, or `!=` when `negated`.
    Equal {
        left: Box<Condition>,
        right: Box<Condition>,
        negated: bool,
    },
    Compare {
        left: Box<Condition>,
        right: Box<Condition>,
        holds: fn(Ordering) -> bool,
    },
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

#[derive(Debug)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl Condition {
    /// The native form of `expr`, or `None` if any part of it is outside the subset.
    /// `variable` names the rule variables; any other identifier stays with the interpreter.
    pub(crate) fn compile(
        expr: &IdedExpr,
        variable: &dyn Fn(&str) -> Option<Source>,
    ) -> Option<Condition> {
        Some(match &expr.expr {
            Expr::Literal(literal) => Condition::Literal(match literal {
                LiteralValue::Null => Literal::Null,
                LiteralValue::Boolean(b) => Literal::Bool(*b.inner()),
                LiteralValue::Int(i) => Literal::Int(*i.inner()),
                LiteralValue::Double(d) => Literal::Float(*d.inner()),
                LiteralValue::String(s) => Literal::Str(s.inner().to_string()),
                LiteralValue::Bytes(_) | LiteralValue::UInt(_) => return None,
            }),
            Expr::Ident(name) => Condition::Variable(variable(name)?),
            Expr::Call(call) if call.target.is_none() => {
                let arg = |k: usize| -> Option<Box<Condition>> {
                    Some(Box::new(Condition::compile(call.args.get(k)?, variable)?))
                };
                let compare = |holds: fn(Ordering) -> bool| -> Option<Condition> {
                    Some(Condition::Compare {
                        left: arg(0)?,
                        right: arg(1)?,
                        holds,
                    })
                };
                match (call.func_name.as_str(), call.args.len()) {
                    (operators::LOGICAL_AND, 2) => Condition::And(arg(0)?, arg(1)?),
                    (operators::LOGICAL_OR, 2) => Condition::Or(arg(0)?, arg(1)?),
                    (operators::LOGICAL_NOT, 1) => Condition::Not(arg(0)?),
                    (operators::EQUALS, 2) | (operators::NOT_EQUALS, 2) => Condition::Equal {
                        left: arg(0)?,
                        right: arg(1)?,
                        negated: call.func_name == operators::NOT_EQUALS,
                    },
                    (operators::LESS, 2) => compare(|o| o == Ordering::Less)?,
                    (operators::LESS_EQUALS, 2) => compare(|o| o != Ordering::Greater)?,
                    (operators::GREATER, 2) => compare(|o| o == Ordering::Greater)?,
                    (operators::GREATER_EQUALS, 2) => compare(|o| o != Ordering::Less)?,
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    /// Evaluates as the interpreter does (see the module docs).
    pub(crate) fn eval<'a>(
        &'a self,
        value_of: &dyn Fn(Source) -> Scalar<'a>,
    ) -> Result<Scalar<'a>, Failed> {
        match self {
            Condition::Literal(l) => Ok(match l {
                Literal::Null => Scalar::Null,
                Literal::Bool(b) => Scalar::Bool(*b),
                Literal::Int(i) => Scalar::Int(*i),
                Literal::Float(x) => Scalar::Float(*x),
                Literal::Str(s) => Scalar::Str(s),
            }),
            Condition::Variable(source) => Ok(value_of(*source)),
            Condition::Equal {
                left,
                right,
                negated,
            } => {
                let (a, b) = (left.eval(value_of)?, right.eval(value_of)?);
                Ok(Scalar::Bool(equals(a, b) != *negated))
            }
            Condition::Compare { left, right, holds } => {
                let (a, b) = (left.eval(value_of)?, right.eval(value_of)?);
                Ok(Scalar::Bool(holds(compare(a, b)?)))
            }
            // CEL's `&&`: false if either side is false, even when the other fails.
            Condition::And(left, right) => {
                let l = as_bool(left.eval(value_of));
                if l == Ok(false) {
                    return Ok(Scalar::Bool(false));
                }
                match (l, right.eval(value_of)?) {
                    (Ok(true), Scalar::Bool(r)) => Ok(Scalar::Bool(r)),
                    (Err(_), Scalar::Bool(false)) => Ok(Scalar::Bool(false)),
                    _ => Err(Failed),
                }
            }
            // CEL's `||`: true if either side is true, even when the other fails.
            Condition::Or(left, right) => {
                let l = as_bool(left.eval(value_of));
                if l == Ok(true) {
                    return Ok(Scalar::Bool(true));
                }
                match (l, right.eval(value_of)?) {
                    (Ok(false), Scalar::Bool(r)) => Ok(Scalar::Bool(r)),
                    (Err(_), Scalar::Bool(true)) => Ok(Scalar::Bool(true)),
                    _ => Err(Failed),
                }
            }
            Condition::Not(inner) => match inner.eval(value_of)? {
                Scalar::Bool(b) => Ok(Scalar::Bool(!b)),
                _ => Err(Failed),
            },
        }
    }
}

fn as_bool(v: Result<Scalar<'_>, Failed>) -> Result<bool, Failed> {
    match v {
        Ok(Scalar::Bool(b)) => Ok(b),
        _ => Err(Failed),
    }
}

/// The interpreter's `==`: numbers compare across int and double; other kinds only with their own.
fn equals(a: Scalar<'_>, b: Scalar<'_>) -> bool {
    match (a, b) {
        (Scalar::Null, Scalar::Null) => true,
        (Scalar::Bool(x), Scalar::Bool(y)) => x == y,
        (Scalar::Str(x), Scalar::Str(y)) => x == y,
        _ => compare(a, b) == Ok(Ordering::Equal),
    }
}

/// The interpreter's ordering: numbers across int and double (NaN orders with nothing), bools
/// and strings with their own kind; null with nothing.
fn compare(a: Scalar<'_>, b: Scalar<'_>) -> Result<Ordering, Failed> {
    match (a, b) {
        (Scalar::Int(x), Scalar::Int(y)) => Ok(x.cmp(&y)),
        (Scalar::Int(x), Scalar::Float(y)) => (x as f64).partial_cmp(&y).ok_or(Failed),
        (Scalar::Float(x), Scalar::Int(y)) => x.partial_cmp(&(y as f64)).ok_or(Failed),
        (Scalar::Float(x), Scalar::Float(y)) => x.partial_cmp(&y).ok_or(Failed),
        (Scalar::Bool(x), Scalar::Bool(y)) => Ok(x.cmp(&y)),
        (Scalar::Str(x), Scalar::Str(y)) => Ok(x.cmp(y)),
        _ => Err(Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cel::objects::Value;
    use cel::{Context, Program};
    use rand::{Rng, SeedableRng};

    const VARS: [&str; 4] = ["a", "b", "c", "d"];
    const LITERALS: [&str; 12] = [
        "null", "true", "false", "0", "1", "3", "2.5", "1.0", "0.0", "'x'", "'y'", "''",
    ];

    fn random_expr(rng: &mut impl Rng, depth: u32) -> String {
        if depth == 0 || rng.random_bool(0.3) {
            return if rng.random_bool(0.6) {
                VARS[rng.random_range(0..VARS.len())].to_string()
            } else {
                LITERALS[rng.random_range(0..LITERALS.len())].to_string()
            };
        }
        let (l, r) = (random_expr(rng, depth - 1), random_expr(rng, depth - 1));
        match rng.random_range(0..9) {
            0 => format!("({l} && {r})"),
            1 => format!("({l} || {r})"),
            2 => format!("!({l})"),
            3 => format!("({l} == {r})"),
            4 => format!("({l} != {r})"),
            5 => format!("({l} < {r})"),
            6 => format!("({l} <= {r})"),
            7 => format!("({l} > {r})"),
            _ => format!("({l} >= {r})"),
        }
    }

    fn random_value(rng: &mut impl Rng) -> Scalar<'static> {
        match rng.random_range(0..10) {
            0 => Scalar::Null,
            1 => Scalar::Bool(rng.random_bool(0.5)),
            2 | 3 => Scalar::Int(rng.random_range(-1..4)),
            4 => Scalar::Float([0.0, 1.0, 2.5, 3.0][rng.random_range(0..4)]),
            5 => Scalar::Float(f64::NAN),
            6 => Scalar::Str(["x", "y", ""][rng.random_range(0..3)]),
            _ => Scalar::Int(rng.random_range(0..2)),
        }
    }

    /// The native evaluation gives the interpreter's answer — the same value, or an error
    /// where it errs — on random conditions over random values of every kind.
    #[test]
    fn native_conditions_answer_as_the_interpreter() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let variable = |name: &str| VARS.iter().position(|v| *v == name).map(Source::Feature);
        let root = Context::default();
        let (mut compared, mut hits, mut errors) = (0, 0, 0);
        for _ in 0..4000 {
            let source = random_expr(&mut rng, 3);
            let program = Program::compile(&source).expect("generated conditions parse");
            let condition = Condition::compile(program.expression(), &variable)
                .unwrap_or_else(|| panic!("{source} is in the subset"));
            for _ in 0..4 {
                let values: Vec<Scalar<'static>> =
                    VARS.iter().map(|_| random_value(&mut rng)).collect();
                let mut ctx = root.new_inner_scope();
                for (name, v) in VARS.iter().zip(&values) {
                    ctx.add_variable_from_value(*name, v.to_cel());
                }
                let interpreted = program.execute(&ctx).map_err(|_| Failed);
                let value_of = |s: Source| match s {
                    Source::Feature(i) => values[i],
                    _ => Scalar::Null,
                };
                let native = condition.eval(&value_of).map(Scalar::to_cel);
                // Compared as text so that NaN matches NaN.
                assert_eq!(
                    format!("{native:?}"),
                    format!("{interpreted:?}"),
                    "{source} with {values:?}"
                );
                compared += 1;
                hits += usize::from(interpreted == Ok(Value::Bool(true)));
                errors += usize::from(interpreted.is_err());
            }
        }
        // The corpus exercises every outcome, not only errors.
        assert!(
            hits > compared / 20 && errors > compared / 10,
            "{hits} {errors} of {compared}"
        );
    }

    #[test]
    fn anything_else_stays_with_the_interpreter() {
        let variable = |name: &str| (name == "a").then_some(Source::Feature(0));
        for source in [
            "a + 1 > 2",
            "[1, 2].exists(x, x > a)",
            "size('ab') > a",
            "a > 1u",
            "other > 1",
            "a ? true : false",
            "a in [1, 2]",
            "a.b",
        ] {
            let program = Program::compile(source).expect("parses");
            assert!(
                Condition::compile(program.expression(), &variable).is_none(),
                "{source}"
            );
        }
    }
}
