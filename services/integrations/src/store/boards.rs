//! `integrations.pinterest_boards`: the tenant's boards as Pinterest last listed them.

use chrono::{DateTime, Utc};
use haven_providers::pinterest::PinterestBoard;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Result;

/// One stored board.
#[derive(Clone, Debug)]
pub struct BoardRow {
    pub board_id: String,
    pub name: String,
    pub pin_count: i64,
    pub synced_at: DateTime<Utc>,
}

/// Makes the stored boards exactly `boards` (new ones added, renamed ones updated, gone ones
/// deleted), sets `board_count` in the integration's metadata and notes the sync time.
pub async fn replace(
    conn: &mut PgConnection,
    tenant: Uuid,
    integration: Uuid,
    boards: &[PinterestBoard],
) -> Result<()> {
    let ids: Vec<&str> = boards.iter().map(|b| b.id.as_str()).collect();
    let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
    let pins: Vec<i64> = boards.iter().map(|b| b.pin_count).collect();
    sqlx::query!(
        "DELETE FROM integrations.pinterest_boards WHERE tenant_id = $1 AND board_id <> ALL($2)",
        tenant,
        &ids as &[&str]
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO integrations.pinterest_boards (tenant_id, board_id, name, pin_count, synced_at)
         SELECT $1, b.id, b.name, b.pins, now()
         FROM unnest($2::text[], $3::text[], $4::bigint[]) AS b(id, name, pins)
         ON CONFLICT (tenant_id, board_id) DO UPDATE
           SET name = EXCLUDED.name, pin_count = EXCLUDED.pin_count, synced_at = now()",
        tenant,
        &ids as &[&str],
        &names as &[&str],
        &pins
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE integrations.integrations
         SET boards_synced_at = now(),
             metadata = jsonb_set(metadata, '{board_count}', to_jsonb($2::bigint)),
             updated_at = now()
         WHERE id = $1",
        integration,
        ids.len() as i64
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// When the boards were last synced, for the hourly limit.
pub async fn synced_at(
    conn: &mut PgConnection,
    integration: Uuid,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar!(
        "SELECT boards_synced_at FROM integrations.integrations WHERE id = $1",
        integration
    )
    .fetch_optional(conn)
    .await?
    .flatten())
}

/// The tenant's boards by name, and when they were last synced.
pub async fn list(pool: &PgPool, tenant: Uuid) -> Result<(Vec<BoardRow>, Option<DateTime<Utc>>)> {
    let boards = sqlx::query_as!(
        BoardRow,
        "SELECT board_id, name, pin_count, synced_at FROM integrations.pinterest_boards
         WHERE tenant_id = $1 ORDER BY lower(name), board_id",
        tenant
    )
    .fetch_all(pool)
    .await?;
    let synced = sqlx::query_scalar!(
        "SELECT boards_synced_at FROM integrations.integrations WHERE tenant_id = $1 AND provider = 'pinterest'",
        tenant
    )
    .fetch_optional(pool)
    .await?
    .flatten();
    Ok((boards, synced))
}
