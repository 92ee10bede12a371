"""Every statement of the SQL stores, written once and rendered for one dialect.

Parameters are ``:name``; where the databases differ, the dialect's words are
spliced in (its clock, its row locks, list membership).
"""

from __future__ import annotations

from ..base import BLOCKED, FAILED, RUNNING, SUSPENDED, WAITING
from .dialect import Dialect

# The status a client sees: an instance that has not ended shows as suspended, or as blocked
# when a worker could not run it (until one saves it).
UNENDED = f"status IN ('{RUNNING}', '{WAITING}')"
SHOWN_STATUS = (f"CASE WHEN suspended AND {UNENDED} THEN '{SUSPENDED}'"
                f" WHEN blocked IS NOT NULL AND {UNENDED} THEN '{BLOCKED}' ELSE status END")
# The columns an InstanceInfo is made of, in its order.
INFO = (f"id, program, {SHOWN_STATUS}, waiting_for, created_at, updated_at,"
        " COALESCE(blocked, reason), lease_owner, wake_at, blocked_by")


class Statements:
    def __init__(self, d: Dialect) -> None:
        sql = d.render
        # Runnable: running, or waiting for an event that has arrived or for a time that has
        # come on the database's clock (or on a test's clock, :timers; the runtime checks it
        # again, so a timer never fires early); not suspended; no live lease. A lease is live
        # until it expires on the database's clock.
        runnable = f"""
            i.status IN ('{RUNNING}', '{WAITING}') AND NOT i.suspended
            AND (i.status = '{RUNNING}' OR i.wake_at <= COALESCE(CAST(:timers AS {d.real}), {d.now})
                OR EXISTS (
                SELECT 1 FROM durable_events e
                WHERE e.instance_id = i.id
                  AND (e.name = i.waiting_for OR {d.member("e.name", "i.waits")})))
            AND (i.lease_owner IS NULL OR i.lease_expires <= {d.now})
            AND {d.member("i.program", ":programs")}
            AND NOT {d.member("i.id", ":refused_ids")}
            AND (i.code IS NULL OR NOT {d.member("i.code", ":refused_code")})"""
        held = "id = :id AND fence = :fence AND lease_owner = :owner"

        # Instances.
        self.load = sql("SELECT state FROM durable_instances WHERE id = :id")
        self.exists = sql("SELECT 1 FROM durable_instances WHERE id = :id")
        self.info = sql(f"SELECT {INFO} FROM durable_instances WHERE id = :id")
        self.list = sql(f"SELECT {INFO} FROM durable_instances"
                        " ORDER BY created_at DESC, id LIMIT :limit")
        self.list_status = sql(f"SELECT {INFO} FROM durable_instances WHERE {SHOWN_STATUS} = :status"
                               " ORDER BY created_at DESC, id LIMIT :limit")
        columns = "program, status, waiting_for, wake_at, waits, state, code, positions, summary"
        values = (":program, :status, :waiting_for, :wake_at, :waits, :state, :code, :positions,"
                  " :summary")
        # ON CONFLICT with no target: PostgreSQL keeps ids unique by an exclusion constraint.
        self.create = sql(f"""
            INSERT INTO durable_instances (id, {columns}, start_digest, created_at, updated_at)
            VALUES (:id, {values}, :start_digest, {d.now}, {d.now}) ON CONFLICT DO NOTHING""")
        self.started = sql("SELECT program, start_digest FROM durable_instances WHERE id = :id")
        self.summary = sql("SELECT summary FROM durable_instances WHERE id = :id")
        # A save: this update, else a create (else the update again, when another transaction
        # created the instance meanwhile). A save of a running instance keeps the summary of
        # its last pause.
        self.save = sql(f"""
            UPDATE durable_instances SET program = :program, status = :status,
                waiting_for = :waiting_for, wake_at = :wake_at, waits = :waits, state = :state,
                updated_at = {d.now}, code = :code, positions = :positions, blocked = NULL,
                blocked_by = NULL, summary = COALESCE(:summary, summary)
            WHERE id = :id""")
        # A save that pauses or ends the run (:ends) gives the lease back.
        self.save_leased = sql(f"""
            UPDATE durable_instances SET status = :status, waiting_for = :waiting_for,
                wake_at = :wake_at, waits = :waits, state = :state, updated_at = {d.now},
                code = :code, positions = :positions, blocked = NULL, blocked_by = NULL,
                summary = COALESCE(:summary, summary),
                lease_owner = CASE WHEN :ends THEN NULL ELSE lease_owner END,
                lease_expires = CASE WHEN :ends THEN NULL ELSE lease_expires END
            WHERE {held}""")
        self.state_for_update = sql(
            f"SELECT state, status FROM durable_instances WHERE id = :id{d.lock_row}")
        self.terminate = sql(f"""
            UPDATE durable_instances SET status = :status, waiting_for = NULL, wake_at = NULL,
                waits = NULL, state = :state, reason = :reason, updated_at = {d.now},
                fence = fence + 1, lease_owner = NULL, lease_expires = NULL, code = NULL,
                positions = NULL, blocked = NULL, blocked_by = NULL
            WHERE id = :id""")
        # What `durable check` reads: where the frames of unfinished instances stand.
        self.unfinished = sql(f"SELECT id, program, {SHOWN_STATUS}, positions FROM durable_instances"
                              f" WHERE {UNENDED} AND {d.member('program', ':programs')} ORDER BY id")
        # A failed instance goes back to its last save (state_for_update read it).
        self.retry = sql(f"""
            UPDATE durable_instances SET status = :status, waiting_for = :waiting_for,
                wake_at = :wake_at, waits = :waits, state = :state, code = :code,
                positions = :positions, summary = COALESCE(:summary, summary),
                updated_at = {d.now}, fence = fence + 1,
                lease_owner = NULL, lease_expires = NULL, blocked = NULL, blocked_by = NULL
            WHERE id = :id AND status = '{FAILED}'""")
        self.suspend = sql(f"""
            UPDATE durable_instances SET suspended = :suspended
            WHERE id = :id AND suspended != :suspended AND status IN ('{RUNNING}', '{WAITING}')""")

        # Claims and leases. The first query costs no write when nothing is runnable; the
        # claim locks what it picks, skipping rows another transaction holds.
        self.any_runnable = sql(f"SELECT 1 FROM durable_instances i WHERE {runnable} LIMIT 1")
        self.claim = sql(f"""
            WITH picked AS MATERIALIZED (
                SELECT i.id FROM durable_instances i WHERE {runnable}
                ORDER BY i.updated_at LIMIT :limit{d.lock_rows})
            UPDATE durable_instances SET lease_owner = :owner,
                lease_expires = {d.now} + :seconds, fence = fence + 1
            WHERE id IN (SELECT id FROM picked)
            RETURNING id, program, fence, updated_at, state, code""")
        self.claimed_events = sql("SELECT instance_id, id, name FROM durable_events"
                                  f" WHERE {d.member('instance_id', ':ids')} ORDER BY id")
        self.now = sql(f"SELECT {d.now}")
        self.next_wake = sql(f"""
            SELECT min(wake_at) FROM durable_instances
            WHERE status = '{WAITING}' AND wake_at IS NOT NULL AND {d.member("program", ":programs")}""")
        self.renew = sql(f"UPDATE durable_instances SET lease_expires = {d.now} + :seconds"
                         f" WHERE {held}")
        self.release = sql("UPDATE durable_instances SET lease_owner = NULL, lease_expires = NULL"
                           f" WHERE {held}")
        # A worker that cannot run an instance gives it back saying why; its state stays.
        self.block = sql("UPDATE durable_instances SET lease_owner = NULL, lease_expires = NULL,"
                         f" blocked = :reason, blocked_by = :owner WHERE {held}")

        # History: an instance's entries in order; the oldest beyond :keep go.
        self.add_history = sql("INSERT INTO durable_history (instance_id, at, kind, data)"
                               " VALUES (:id, :at, :kind, :data)")
        self.add_history_now = sql("INSERT INTO durable_history (instance_id, at, kind, data)"
                                   f" VALUES (:id, {d.now}, :kind, :data)")
        self.history = sql("SELECT id, at, kind, data FROM durable_history"
                           " WHERE instance_id = :id AND id > :after ORDER BY id LIMIT :limit")
        self.trim_history = sql("""
            DELETE FROM durable_history WHERE instance_id = :id AND id <= (
                SELECT id FROM durable_history WHERE instance_id = :id
                ORDER BY id DESC LIMIT 1 OFFSET :keep)""")

        # Events.
        # Only to an instance that exists and has not ended (else nothing would consume it):
        # its status is read, its row locked until the insert commits, in one transaction.
        self.receiving = sql(f"SELECT status FROM durable_instances WHERE id = :id{d.lock_row}")
        self.publish = sql(f"""
            INSERT INTO durable_events (instance_id, name, payload, published_at)
            VALUES (:id, :name, :payload, {d.now})
            RETURNING id{f", {d.announce}" if d.announce else ""}""")
        self.events = sql("SELECT id, name FROM durable_events WHERE instance_id = :id ORDER BY id")
        self.payload = sql("SELECT name, payload FROM durable_events WHERE instance_id = :id"
                           " AND id = :event")
        self.consume = sql("DELETE FROM durable_events WHERE instance_id = :id"
                           f" AND {d.member('id', ':events')}")
        self.drop_events = sql("DELETE FROM durable_events WHERE instance_id = :id")
