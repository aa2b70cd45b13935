#!/usr/bin/env bash
# Breaks the mechanisms the promise rests on, one at a time, and runs the tests that guard each:
# every mutation must turn at least one of them red. Prints a line per mutation; exits non-zero
# when a mutation survives. Needs the services (scripts/services.sh up) and a built tree.
#   scripts/mutations.sh [pattern]    only the mutations whose guarding tests contain the pattern
set -euo pipefail
SCRIPT_NAME=mutations
cd "$(dirname "$0")/.."
source scripts/lib.sh
export APP_ENV=development
services_up

# file | text | replacement | tests that must go red
MUTATIONS=(
  "src/issuer/mod.rs|Err(e) => {
                        tracing::warn!(error = %e, %coupon, \"send failed; the winner goes back to pending\");
                        failed.push(winner.user);|Err(_) => {
                        delivered.push(winner.user);|faults::a_send_that_failed_is_sent_again"
  "src/ops/reconcile/mod.rs|hold_on_server_change: settings.redis.ack_replicas == 0,|hold_on_server_change: false,|lineage::a_redis_that_lost_its_last_writes"
  "src/ops/reconcile/settle.rs|self.wait_drained(deadline).await?;|let _ = deadline;|lineage::a_redis_that_lost_its_last_writes"
  "src/gate/apply.lua|  local clock = math.max(now, last + 1)|  local clock = now|clock::a_redis_clock_stepped_back batching::applications_that_arrive_together"
  "src/gate/advance.lua|if (rank[current] or 0) < rank[target] then|if (rank[current] or 0) < rank[target] or target == 'ISSUED' then|faults::a_consumer_killed_mid_batch_is_redelivered_without_duplicates"
  "src/ops/reconcile/look.rs|if !registry.contains(&coupon.id) && has_work(&coupon, standing) {|if false {|repair::an_event_missing_from_the_issuer_registry"
  "src/gate/told.rs|if self.ack.is_none() {|if false {|lineage::winners_a_redis_lost_before_they_were_published"
  "src/gate/confirm.rs|let _ = waiting.send(Ok(here && confirmed >= replicas));|let _ = waiting.send(Ok(confirmed >= replicas));|lineage::an_admission_is_never_confirmed"
  "src/issuer/mod.rs|if claiming.elapsed() > self.claim_window && !claim.winners.is_empty() {|if false {|issuance::a_claim_older_than_the_claim_window"
  "src/api/fresh.rs|if at.elapsed() < FRESH_FOR {|if false {|issuance::a_flood_of_public_list_reads_reaches_the_database"
  "src/gate/restore.lua|redis.call('HSET', KEYS[8], user, string.format('%d:%.0f', w[4], w[2]))|redis.call('HSET', KEYS[6], user, 'FAILED')|lineage::a_winner_whose_place_an_earlier_arrival_kept"
  # Batched admission: one per user inside a batch, the cap, each member's own answer, arrival
  # order within a batch, a failed call answered to every member.
  "src/gate/apply.lua|  if won then|  if false then|batching::three_instances_batching_at_once"
  "src/gate/apply.lua|  elseif admitted >= stock then|  elseif admitted > stock then|batching::three_instances_batching_at_once"
  "src/gate/batching.rs|for ((_, answer), admission) in members.into_iter().zip(answers) {|for ((_, answer), admission) in members.into_iter().zip(answers.into_iter().rev()) {|batching::three_instances_batching_at_once"
  "src/gate/batching.rs|batch.members.push((user, answer));|batch.members.insert(0, (user, answer));|batching::applications_that_arrive_together"
  "src/gate/batching.rs|let _ = answer.send(Err(e.shared()));|let _ = (answer, e.shared());|batching::a_batch_whose_call_fails"
  "src/gate/admission.rs|(Err(e), Some(_)) => Err(e.shared()),|(Err(e), _) => Err(e.shared()),|batching::a_batch_no_replica_confirmed"
  # Verifiable fairness: the log's order, its commitments, and the checks that expose a rewrite.
  "src/fairness/builder.rs|while u64::from(position as u32) > next && !blocked {|while false {|fairness_builder::leaves_wait_for_their_place"
  "src/fairness/leaf.rs|h.update(nonce);|let _ = nonce;|fairness::a_forged_receipt_does_not_verify"
  "src/fairness/verify.rs|if from.size() == to.size() && from.hash() != to.hash() {|if false {|fairness::a_rewritten_log_fails_from_every_checkpoint"
  "src/fairness/verify.rs|if leaf.arrived_us <= last_arrival {|if false {|fairness::a_rewritten_log_fails_from_every_checkpoint"
  "src/fairness/audit.rs|(LeafKind::Issued, None) => say(|(LeafKind::Issued, None) if false => say(|fairness::the_audit_reports_rows_changed_or_deleted"
  "src/api/dashboard.html|if (!same(commitment, leaf.slice(22))) throw|if (false) throw|fairness::the_dashboard_verifies_a_winners_place"
  # Running a drop: the live books, rehearsal tokens kept to rehearsal events and never admin,
  # a rehearsal deleted only at rest, unlisted, and a verdict that fails on the drain.
  "src/gate/census.lua|local stranded = count.ADMITTED|local stranded = 0|invariants::a_pending_winner_dropped"
  "src/ops/reconcile/books.rs|findings.push((\"stages\", c.admitted.abs_diff(staged + c.lost)));|findings.push((\"stages\", 0));|invariants::a_status_edited_or_dropped"
  "src/ops/reconcile/books.rs|Some(Some(0)) => unpersisted,|Some(Some(0)) => 0,|invariants::a_status_edited_or_dropped"
  "src/ops/reconcile/books.rs|.saturating_sub(stock),|.saturating_sub(stock + 1),|invariants::a_row_inserted_past_the_stock"
  "src/api/rehearsal.rs|if !caller.rehearsal {|if true {|rehearsal::a_rehearsal_token_is_refused"
  "src/auth/verifier.rs|return caller(Some(&claims.sub), false).map(Caller::as_rehearsal);|return caller(Some(&claims.sub), claims.role.is_some());|rehearsal::a_rehearsal_token_is_refused"
  "src/store/coupons.rs|WHERE NOT rehearsal ORDER BY|WHERE true ORDER BY|rehearsal::a_rehearsal_token_is_refused"
  "src/gate/drop.lua|  if status == 'ADMITTED' or status == 'PUBLISHED' then|  if false then|rehearsal::a_rehearsal_token_is_refused"
  "bench/src/rehearse/verdict.rs|matches!(drain_ms, Some(t) if t <= opts.max_drain_ms),|true,|rehearsal::with_the_consumer_stopped"
  "src/ops/reconcile/look.rs|self.gate.forget(missing.intersection(&absent).copied());|let _ = &absent;|rehearsal::a_rehearsal_deleted_on_one_instance"
  "src/api/apply.rs|let address = (!auth.0.rehearsal)|let address = (true)|rehearsal::a_rehearsals_crowd_is_not_held"
  "src/api/coupons.rs|auth.require_admin()?;
        let id = coupon_id(coupon.0)?;
        // A message still on the topic|let id = coupon_id(coupon.0)?;
        // A message still on the topic|rehearsal::a_rehearsal_token_is_refused"
)

survived=0
for mutation in "${MUTATIONS[@]}"; do
  IFS='|' read -r -d '' file text replacement tests <<<"$mutation" || true
  tests=${tests%$'\n'}
  [[ "$tests" == *"${1:-}"* ]] || continue
  python3 - "$file" "$text" "$replacement" <<'PY'
import sys
path, old, new = sys.argv[1:4]
src = open(path).read()
assert src.count(old) == 1, f"{path}: the text to mutate is not there exactly once"
open(path, "w").write(src.replace(old, new))
PY
  if cargo test --locked --test api -- --include-ignored $tests >"/tmp/mutation.log" 2>&1; then
    say "SURVIVED: $file ($tests stayed green)"
    survived=$((survived + 1))
  else
    say "killed:   $file (red: $(grep -c '\.\.\. FAILED' /tmp/mutation.log) of $tests)"
  fi
  git checkout -- "$file"
done
[ "$survived" -eq 0 ] || die "$survived mutation(s) survived"
