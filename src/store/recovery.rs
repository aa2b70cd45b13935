//! What reconciliation and the audit read back from PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::StoreError;
use crate::domain::{
    Coupon, CouponId, CouponName, EventWindow, InvalidValue, PersistedWinner, Position, Stock,
    UserId,
};

#[derive(sqlx::FromRow)]
struct CouponRow {
    id: i64,
    name: String,
    stock: i32,
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl CouponRow {
    /// The table's CHECKs hold the same rules as the domain types; a row that breaks them is
    /// a corrupt database, reported rather than skipped.
    fn into_coupon(self) -> Result<Coupon, InvalidValue> {
        Ok(Coupon {
            id: CouponId::new(self.id)?,
            name: CouponName::new(&self.name)?,
            stock: Stock::new(i64::from(self.stock))?,
            window: EventWindow::new(self.opens_at, self.closes_at)?,
            created_at: self.created_at,
        })
    }
}

const COUPON_COLUMNS: &str = "id, name, stock, opens_at, closes_at, created_at";

/// A coupon as the Redis watcher needs it (see `crate::ops::reconcile`).
#[derive(Debug, Clone)]
pub struct Watched {
    pub coupon: Coupon,
    /// The highest persisted position (0 for none): Redis admitted fewer means it regressed.
    pub last_position: u32,
    pub issued_count: u32,
    /// When its Redis copy was retired (set to expire): reads come from PostgreSQL once the
    /// keys are gone.
    pub retired_at: Option<DateTime<Utc>>,
}

/// Every coupon, with what the watcher compares Redis with. One index probe per coupon.
pub async fn watched_coupons(db: &PgPool) -> Result<Vec<Watched>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        coupon: CouponRow,
        last_position: i32,
        issued_count: i32,
        retired_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS}, issued_count, retired_at, \
         COALESCE((SELECT max(position) FROM coupon_issue i WHERE i.coupon_id = coupon.id), 0) \
         AS last_position FROM coupon ORDER BY id"
    ))
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Watched {
                coupon: row.coupon.into_coupon()?,
                last_position: non_negative(row.last_position)?,
                issued_count: non_negative(row.issued_count)?,
                retired_at: row.retired_at,
            })
        })
        .collect::<Result<_, InvalidValue>>()
        .map_err(Into::into)
}

pub async fn find_coupon(db: &PgPool, id: CouponId) -> Result<Option<Coupon>, StoreError> {
    let row: Option<CouponRow> = sqlx::query_as(&format!(
        "SELECT {COUPON_COLUMNS} FROM coupon WHERE id = $1"
    ))
    .bind(id.get())
    .fetch_optional(db)
    .await?;
    Ok(row.map(CouponRow::into_coupon).transpose()?)
}

/// A coupon's persisted winners in ascending position, with the counter the consumer keeps.
pub async fn persisted_winners(
    db: &PgPool,
    coupon: CouponId,
) -> Result<(Vec<PersistedWinner>, u32), StoreError> {
    let rows: Vec<(i64, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, position, applied_at FROM coupon_issue WHERE coupon_id = $1 ORDER BY position",
    )
    .bind(coupon.get())
    .fetch_all(db)
    .await?;
    let issued_count: i32 = sqlx::query_scalar("SELECT issued_count FROM coupon WHERE id = $1")
        .bind(coupon.get())
        .fetch_one(db)
        .await?;
    let winners = rows
        .into_iter()
        .map(|(user, position, applied_at)| {
            Ok(PersistedWinner {
                user: UserId::new(user)?,
                position: Position::new(non_negative(position)?)?,
                applied_at,
            })
        })
        .collect::<Result<_, InvalidValue>>()?;
    Ok((winners, non_negative(issued_count)?))
}

fn non_negative(value: i32) -> Result<u32, InvalidValue> {
    u32::try_from(value).map_err(|_| InvalidValue(format!("negative count {value}")))
}
