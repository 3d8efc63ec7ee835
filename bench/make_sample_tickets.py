"""Write the sample support database: src/stanchion/sample/tickets.db.

Kestrel Freight's support tickets, for the demo's ``support`` agent ("how many open support tickets
mention the refund policy, and what does the policy say?"): the ``sql`` tool counts them here, and
``search`` finds the policy in ``sample/policies/refund-policy.md``. Every row is written out below
(project-authored, fictional); 40 belong to the default tenant and 4 to another tenant
(``harbor-line``), so a query that leaked across tenants would count wrong.

    python bench/make_sample_tickets.py [--out PATH]

The database is committed (about 20 KB) rather than built on first use: the sample folder ships
inside the package, which may be installed read-only, and the demo needs no build step. Reruns
write the same rows in the same order (and, with the same SQLite version, the same bytes);
``tests/tools/test_sql_sample.py`` checks that the committed file holds exactly these rows.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "stanchion" / "sample" / "tickets.db"

SCHEMA = """
CREATE TABLE tickets (
    id INTEGER PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('open', 'pending', 'closed')),
    created_at TEXT NOT NULL,
    customer TEXT NOT NULL,
    tenant TEXT NOT NULL
)
"""

# (subject, body, status, created_at, customer, tenant)
TICKETS: list[tuple[str, str, str, str, str, str]] = [
    ("Shipment 88213 arrived three days late", "Our pallet reached Reno three days after the guaranteed date. What does your refund policy give us for that?", "open", "2026-01-19", "Sierra Outdoor Supply", "default"),
    ("Tracking page shows no scans", "Beacon has shown 'label created' for two days on PRO 55102. Is the load moving?", "closed", "2026-01-19", "Bluegill Marine", "default"),
    ("Refund for cancelled pickup", "We cancelled before the driver arrived. Per the refund policy that should be a full refund, correct?", "open", "2026-01-20", "Alder & Finch Furniture", "default"),
    ("Liftgate fee charged twice", "Invoice 40017 lists the liftgate accessorial twice. Please correct it.", "closed", "2026-01-20", "Harmon Dental Labs", "default"),
    ("Question about the refund policy window", "How many days after delivery can we still ask for a refund? Your refund policy page is not clear to our AP team.", "open", "2026-01-21", "Copperline Brewing", "default"),
    ("Damaged crate on delivery", "One crate arrived with a crushed corner. How do we file a freight claim?", "pending", "2026-01-21", "Sierra Outdoor Supply", "default"),
    ("Need a delivery appointment in Savannah", "Can the Savannah hub deliver Friday between 8 and 11?", "closed", "2026-01-22", "Pelican Bay Foods", "default"),
    ("Late delivery, asking for refund under refund policy", "Load 77120 was 30 hours late to Columbus. We read the refund policy as 25% back.", "open", "2026-01-22", "Mesa Verde Ceramics", "default"),
    ("Wrong consignee address", "The BOL for PRO 55340 has an old address for our warehouse. Please update before delivery.", "closed", "2026-01-23", "Bluegill Marine", "default"),
    ("Invoice copy needed", "Please resend the invoice for December shipments to accounts@example.com.", "closed", "2026-01-23", "Harmon Dental Labs", "default"),
    ("Driver could not reach dock", "The dock at our Allentown site was closed for snow. Will there be a redelivery charge?", "pending", "2026-01-24", "Keystone Paper Co", "default"),
    ("Refund still not received", "Refund approved on January 5 has not reached our card. The refund policy says 10 business days.", "open", "2026-01-26", "Copperline Brewing", "default"),
    ("Pickup missed in Reno", "Our pickup window passed with no driver. Please reschedule for tomorrow.", "closed", "2026-01-26", "Tahoe Solar", "default"),
    ("Hazmat paperwork question", "Do you need the SDS sheets for the lithium batteries in advance?", "closed", "2026-01-27", "Tahoe Solar", "default"),
    ("Partial refund amount looks wrong", "We got 25% back, but the shipment was more than 72 hours late. The refund policy table says 50%.", "open", "2026-01-27", "Alder & Finch Furniture", "default"),
    ("Residential delivery surcharge", "Why was a residential surcharge added to a delivery to our store?", "pending", "2026-01-28", "Pelican Bay Foods", "default"),
    ("Customs hold in Rotterdam", "Our EU shipment is held by customs. Is it late under your terms?", "closed", "2026-01-28", "Nordlys Design", "default"),
    ("Refund policy for weather delays?", "The storm delayed our load by four days. Does the refund policy cover weather?", "closed", "2026-01-29", "Keystone Paper Co", "default"),
    ("Update billing contact", "Please send invoices to our new billing contact from February.", "closed", "2026-01-29", "Mesa Verde Ceramics", "default"),
    ("Quote for weekly lane Columbus to Savannah", "We would like a quote for a weekly full truckload lane.", "pending", "2026-01-30", "Pelican Bay Foods", "default"),
    ("Lost shipment", "PRO 56001 has not moved in Beacon for nine days. Is it lost?", "open", "2026-01-30", "Granite State Tools", "default"),
    ("Refund request: shipment 9 days late", "Under your refund policy a delivery more than 7 days late is refunded in full. Load 78002 was 9 days late.", "open", "2026-02-02", "Granite State Tools", "default"),
    ("Inside delivery not performed", "We paid for inside delivery but the freight was left at the curb.", "pending", "2026-02-02", "Harmon Dental Labs", "default"),
    ("Portal login problem", "I cannot log in to the customer portal since the password reset.", "closed", "2026-02-03", "Copperline Brewing", "default"),
    ("Duplicate invoice 40233", "We received invoice 40233 twice. Do we need to ask for a refund?", "closed", "2026-02-03", "Tahoe Solar", "default"),
    ("Can we get a refund above $2,500?", "Our late-delivery refund would be $3,100. Who approves that under the refund policy?", "open", "2026-02-04", "Sierra Outdoor Supply", "default"),
    ("Pallet count mismatch", "The delivery receipt says 11 pallets; we shipped 12.", "pending", "2026-02-04", "Keystone Paper Co", "default"),
    ("Reefer temperature log", "Please send the temperature log for the frozen load on February 1.", "closed", "2026-02-05", "Pelican Bay Foods", "default"),
    ("Refund after pickup cancellation", "We cancelled after pickup. We understand the linehaul is not refunded, but the unused liftgate should be.", "pending", "2026-02-05", "Nordlys Design", "default"),
    ("Rate increase notice", "We got a notice of a carrier rate update. When does it apply to our lanes?", "closed", "2026-02-06", "Alder & Finch Furniture", "default"),
    ("Delivery photo request", "Can the driver's proof-of-delivery photo for PRO 56120 be shared?", "closed", "2026-02-06", "Bluegill Marine", "default"),
    ("Need refund policy in writing", "Our finance team needs the refund policy as a document before they sign the annual contract.", "open", "2026-02-09", "Mesa Verde Ceramics", "default"),
    ("Appointment missed by driver", "The driver arrived two hours after our appointment window and the dock had closed.", "open", "2026-02-09", "Keystone Paper Co", "default"),
    ("Change of payment method", "We are moving from card to ACH. Where do refunds go afterwards?", "closed", "2026-02-10", "Copperline Brewing", "default"),
    ("Freight claim status", "What is the status of our claim for the damaged crate from January 21?", "pending", "2026-02-10", "Sierra Outdoor Supply", "default"),
    ("Late again on the Reno lane", "Third late delivery this month on the Reno lane. We want to talk to an account manager.", "open", "2026-02-11", "Tahoe Solar", "default"),
    ("Refund policy question closed by mistake", "My earlier question about the refund policy was closed without an answer.", "closed", "2026-02-11", "Granite State Tools", "default"),
    ("Weight correction fee", "We were charged a weight correction fee but our scale ticket matches the BOL.", "pending", "2026-02-12", "Alder & Finch Furniture", "default"),
    ("Holiday schedule", "Are the hubs open on Presidents' Day?", "closed", "2026-02-12", "Bluegill Marine", "default"),
    ("Shipment delivered to wrong dock", "The load went to dock 4 instead of dock 9 and sat there overnight.", "open", "2026-02-13", "Nordlys Design", "default"),
    # Another tenant's tickets: the demo's caller must never count or read these.
    ("Harbor Line: refund policy for late container", "Under the refund policy, is a container 5 days late refunded at 50%?", "open", "2026-01-25", "Harbor Line Imports", "harbor-line"),
    ("Harbor Line: refund policy for cancellations", "Please confirm the refund policy when we cancel before pickup.", "open", "2026-01-31", "Harbor Line Imports", "harbor-line"),
    ("Harbor Line: refund not received", "The refund policy promises payment within 10 business days; it has been 14.", "open", "2026-02-07", "Harbor Line Imports", "harbor-line"),
    ("Harbor Line: invoice copy", "Please resend January's invoices.", "closed", "2026-02-08", "Harbor Line Imports", "harbor-line"),
]  # fmt: skip


def write(out: Path) -> None:
    """``out`` replaced by a fresh database holding exactly ``TICKETS`` (ids 1..n in order)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".db.partial")
    partial.unlink(missing_ok=True)
    with sqlite3.connect(partial) as conn:
        conn.execute("PRAGMA page_size = 4096")
        conn.execute(SCHEMA)
        conn.executemany(
            "INSERT INTO tickets (id, subject, body, status, created_at, customer, tenant) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(n, *row) for n, row in enumerate(TICKETS, start=1)],
        )
    conn.close()
    with sqlite3.connect(partial, isolation_level=None) as conn:
        conn.execute("VACUUM")
    conn.close()
    partial.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    write(args.out)
    print(f"wrote {len(TICKETS)} tickets to {args.out}")


if __name__ == "__main__":
    main()
