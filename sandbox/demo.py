"""Deterministic demo data for both sandboxes: a seed and a size (records per kind).

Variety a real pair of CRMs has: unicode names, companies without an address,
contacts with a second email, a second phone or a shipping address, Customcrm
records that already exist for Keap records (same email or SKU, other details
differing), and Customcrm records that exist only there (with `OrgNumber`, which
the sync must never touch). Loaded straight into the sandboxes' files, so
100,000 records per kind take seconds, not an API's hours.
"""

from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.customcrm.store import CustomcrmStore
from sandbox.keap.store import KeapStore

BASE_US = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1_000_000)
SPAN_US = 300 * 24 * 3600 * 1_000_000  # records were last edited within 300 days of BASE

FIRST = [
    "Åse",
    "Bjørn",
    "Zoë",
    "José",
    "Marie",
    "Søren",
    "Chloé",
    "Jürgen",
    "Anaïs",
    "Ola",
    "Mia",
    "Noah",
    "Li",
    "Yuki",
    "Ingrid",
    "Łukasz",
    "Fatima",
    "Olivia",
    "Kári",
    "Renée",
    "Emma",
    "Liam",
    "Sofía",
    "Mateo",
    "Hanna",
    "Ødegård",
    "Ayşe",
    "Dmitrij",
    "Priya",
    "Tomás",
]
LAST = [
    "Nørby",
    "Müller",
    "García",
    "O'Brien",
    "Haugen",
    "Dubois",
    "Nakamura",
    "Smith",
    "Østby",
    "Kowalski",
    "Johansen",
    "Ibrahim",
    "Björk",
    "Lefèvre",
    "Hansen",
    "Rossi",
    "Żak",
    "Yilmaz",
    "Berg",
    "Núñez",
    "Andersen",
    "Papadopoulos",
    "Lund",
    "Chen",
    "Patel",
]
COMPANY_A = [
    "Nordic",
    "Blue",
    "Fjord",
    "Alpine",
    "Golden",
    "Røde",
    "Polar",
    "Zürich",
    "Atlas",
    "Cedar",
    "Lumen",
    "Maple",
    "Sakura",
    "Aurora",
    "Granite",
    "Harbor",
]
COMPANY_B = [
    "Analytics",
    "Bakeri",
    "Consulting",
    "Design",
    "Logistics",
    "Software",
    "Trading",
    "Ventures",
    "Foods",
    "Robotics",
    "Textiles",
    "Energy",
    "Labs",
    "Studios",
]
SUFFIX = ["AS", "GmbH", "Inc.", "Ltd", "S.A.", "AB", "LLC", "KK", "Oy", ""]
PLACES = [  # city, Keap alpha-3, zip style ("zip" in the USA, else postal)
    ("Oslo", "NOR", "0150"),
    ("Bergen", "NOR", "5003"),
    ("Zürich", "CHE", "8001"),
    ("München", "DEU", "80331"),
    ("Austin", "USA", "78701"),
    ("Chicago", "USA", "60601"),
    ("São Paulo", "BRA", "01000-000"),
    ("Kraków", "POL", "30-001"),
    ("Tokyo", "JPN", "100-0001"),
    ("Göteborg", "SWE", "411 01"),
    ("Paris", "FRA", "75001"),
    ("Toronto", "CAN", "M5H 2N2"),
]
STREETS = [
    "Storgata",
    "Hauptstraße",
    "Main St",
    "Rue de Rivoli",
    "Karl Johans gate",
    "Elm Street",
    "Bahnhofstrasse",
    "Avenida Paulista",
    "Drottninggatan",
]
TITLES = [
    "CEO",
    "CTO",
    "Head of Sales",
    "Buyer",
    "Office Manager",
    "Daglig leder",
    "Procurement Lead",
    "Marketing Director",
    None,
    None,
]
DEAL_KINDS = ["Renewal", "New deal", "Upsell", "Pilot", "Rammeavtale"]
PRODUCTS = [
    "Widget",
    "Gadget",
    "Sprocket",
    "Licence",
    "Support plan",
    "Kaffebønner",
    "Brød",
    "Sensor",
    "Cable",
    "Notebook",
    "Consulting hour",
    "Training seat",
]


@dataclass
class DemoSummary:
    size: int
    seed: int
    keap: dict[str, int]
    customcrm: dict[str, int]


def ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("Ø", "O").replace("ł", "l"))
    slug = "".join(ch for ch in folded if ch.isascii() and (ch.isalnum())).lower()
    return slug or "user"


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def pick(self, items: list[Any]) -> Any:
        return items[self.rng.randrange(len(items))]

    def stamp(self) -> int:
        return BASE_US + self.rng.randrange(SPAN_US)

    def phone(self, country: str) -> str:
        prefix = {"NOR": "+47", "USA": "+1", "DEU": "+49", "CHE": "+41"}.get(country, "+44")
        digits = (self.rng.randrange(200, 999), self.rng.randrange(10, 99), self.rng.randrange(100, 999))
        return f"{prefix} {digits[0]} {digits[1]} {digits[2]}"

    def address(self, field: str | None = None) -> dict[str, Any]:
        city, country, code = self.pick(PLACES)
        addr: dict[str, Any] = {
            "line1": f"{self.pick(STREETS)} {self.rng.randrange(1, 200)}",
            "locality": city,
            "country_code": country,
        }
        if self.chance(0.2):
            addr["line2"] = f"Suite {self.rng.randrange(1, 50)}"
        addr["zip_code" if country == "USA" else "postal_code"] = code
        if country == "USA":
            addr["region_code"] = self.pick(["US-TX", "US-IL"])
        if field:
            addr["field"] = field
        return addr


def generate(keap: KeapStore, crm: CustomcrmStore, size: int, seed: int = 42,
             customcrm_share: float = 0.08) -> DemoSummary:  # fmt: skip
    """Fill both sandboxes: `size` Keap records per kind; in Customcrm, `customcrm_share` of
    them already there (same email, name or SKU) and 4% of its own (benchmarks use a share
    of 1.0: as many records per kind on each side)."""
    g = _Gen(seed)
    stage_ids = [s["id"] for s in keap.stages()]

    # --- Keap ---------------------------------------------------------------------
    companies, company_stamps = [], []
    for i in range(size):
        name = f"{g.pick(COMPANY_A)} {g.pick(COMPANY_B)} {g.pick(SUFFIX)}".strip()
        if i >= 40:  # beyond a small demo, keep names mostly unique
            name = f"{name} {i}"
        doc: dict[str, Any] = {"company_name": name}
        if g.chance(0.75):
            doc["address"] = g.address()
        if g.chance(0.7):
            doc["email_address"] = {"email": f"post{i}@{ascii_slug(name)[:20]}.example", "field": "EMAIL1"}
        if g.chance(0.6):
            doc["phone_number"] = {
                "number": g.phone((doc.get("address") or {}).get("country_code", "NOR")),
                "field": "PHONE1",
            }
        if g.chance(0.2):
            doc["fax_number"] = {"number": g.phone("NOR"), "field": "FAX1"}
        if g.chance(0.5):
            doc["website"] = f"https://www.{ascii_slug(name)[:20]}.example"
        if g.chance(0.3):
            doc["notes"] = g.pick(
                [
                    "Key account",
                    "Met at the fair",
                    "Pays late; ask for prepayment",
                    "Wants quarterly invoices",
                    "Ønsker faktura på e-post",
                ]
            )
        companies.append(doc)
        company_stamps.append(g.stamp())
    company_ids = keap.insert_many("companies", companies, company_stamps)

    contacts, contact_stamps = [], []
    for i in range(size):
        first, last = g.pick(FIRST), g.pick(LAST)
        email = f"{ascii_slug(first)}.{ascii_slug(last)}{i}@mail{i % 7}.example"
        doc = {
            "given_name": first,
            "family_name": last,
            "email_addresses": [{"email": email, "field": "EMAIL1"}],
        }
        if g.chance(0.2):
            doc["email_addresses"].append(
                {"email": f"{ascii_slug(first)}{i}@private.example", "field": "EMAIL2"}
            )
        phones = []
        if g.chance(0.8):
            phones.append({"number": g.phone("NOR"), "field": "PHONE1", "type": "Work"})
        if g.chance(0.15):
            phones.append({"number": g.phone("USA"), "field": "PHONE2", "type": "Mobile"})
        if phones:
            doc["phone_numbers"] = phones
        addresses = []
        if g.chance(0.6):
            addresses.append(g.address("BILLING"))
        if g.chance(0.15):
            addresses.append(g.address("SHIPPING"))
        if addresses:
            doc["addresses"] = addresses
        if g.chance(0.7):
            doc["company"] = {"id": str(g.pick(company_ids))}
        title = g.pick(TITLES)
        if title:
            doc["job_title"] = title
        if g.chance(0.4):
            doc["birth_date"] = (
                f"{g.rng.randrange(1950, 2004)}-{g.rng.randrange(1, 13):02d}-{g.rng.randrange(1, 29):02d}"
            )
        contacts.append(doc)
        contact_stamps.append(g.stamp())
    contact_ids = keap.insert_many("contacts", contacts, contact_stamps)

    opportunities, opportunity_stamps = [], []
    for i in range(size):
        doc = {
            "opportunity_title": f"{g.pick(DEAL_KINDS)} #{i + 1}",
            "contact_id": str(g.pick(contact_ids)),
            "stage_id": g.pick(stage_ids),
            "projected_revenue_high": round(g.rng.randrange(0, 5_000_000) / 100, 2),
            "projected_revenue_low": 0,
            "estimated_close_time": f"2026-{g.rng.randrange(1, 13):02d}-{g.rng.randrange(1, 29):02d}T"
            f"{g.rng.randrange(0, 24):02d}:00:00.000+0000",
            "include_in_forecast": g.chance(0.5),
        }
        if g.chance(0.4):
            doc["opportunity_notes"] = g.pick(["Decision in Q3", "Needs a demo", "Budget approved"])
        opportunities.append(doc)
        opportunity_stamps.append(g.stamp())
    keap.insert_many("opportunities", opportunities, opportunity_stamps)

    products, product_stamps = [], []
    for i in range(size):
        name = f"{g.pick(PRODUCTS)} {g.pick(['Basic', 'Pro', 'XL', 'Mini', 'Deluxe'])}"
        doc = {
            "name": name,
            "sku": f"SKU-{i + 1:06d}",
            "price": g.rng.randrange(0, 500_000),
            "short_description": f"{name}, {g.pick(['boxed', 'per month', 'per unit', 'digital'])}",
            "active": g.chance(0.9),
        }
        if g.chance(0.5):
            doc["description"] = f"The {name.lower()} our customers ask for. Ü-compatible."
        products.append(doc)
        product_stamps.append(g.stamp())
    keap.insert_many("products", products, product_stamps)

    # --- Customcrm: some records that match Keap ones, some of its own -------------------
    matched = min(size, max(3, int(size * customcrm_share)))
    own = max(2, size * 4 // 100)

    def crm_rows(resource: str, docs: list[dict[str, Any]]) -> list[tuple[str, int, dict[str, Any]]]:
        rows = []
        for doc in docs:
            stamp = g.stamp()
            rows.append((crm.new_id(resource, stamp, g.rng.randbytes(10)), stamp, doc))
        return rows

    customers: list[dict[str, Any]] = []
    for index in g.rng.sample(range(size), min(matched, size)):  # same email, else same name
        keap_doc = companies[index]
        company_email = (keap_doc.get("email_address") or {}).get("email")
        customers.append(_customer(keap_doc["company_name"], company_email, g, org=g.chance(0.5)))
        if company_email is None:  # the same name once case-folded and inner spaces collapsed
            customers[-1]["Name"] = "  ".join(keap_doc["company_name"].upper().split())
    for i in range(own):
        customers.append(_customer(f"Only-in-Customcrm {g.pick(COMPANY_B)} {i + 1}", None, g, org=True))
    customer_rows = crm_rows("customers", customers)
    crm.insert_many("customers", customer_rows)

    crm_contacts: list[dict[str, Any]] = []
    for index in g.rng.sample(range(size), min(matched, size)):
        keap_doc = contacts[index]
        crm_contacts.append(
            {
                "FirstName": keap_doc["given_name"],
                "LastName": keap_doc["family_name"],
                "Email": keap_doc["email_addresses"][0]["email"].upper()
                if g.chance(0.3)
                else keap_doc["email_addresses"][0]["email"],
                "Phone": g.phone("NOR"),
                "Title": g.pick(TITLES),
                "CustomerId": None,
                "StreetAddress1": None,
                "StreetAddress2": None,
                "City": None,
                "ZipCode": None,
                "Country": None,
                "BirthDate": None,
                "ExternalRefs": {},
            }
        )
    for i in range(own):
        first, last = g.pick(FIRST), g.pick(LAST)
        crm_contacts.append(
            {
                "FirstName": first,
                "LastName": last,
                "Email": f"{ascii_slug(first)}.{ascii_slug(last)}.crm{i}@customcrm-only.example",
                "Phone": None,
                "Title": "Customcrm-only contact",
                "CustomerId": customer_rows[-1 - (i % own)][0],
                "StreetAddress1": None,
                "StreetAddress2": None,
                "City": "Oslo",
                "ZipCode": "0150",
                "Country": "NO",
                "BirthDate": None,
                "ExternalRefs": {},
            }
        )
    crm_contact_rows = crm_rows("contacts", crm_contacts)
    crm.insert_many("contacts", crm_contact_rows)

    orders = []
    for i in range(own):
        orders.append(
            {
                "Title": f"Customcrm-only order {i + 1}",
                "ContactId": crm_contact_rows[-1 - (i % own)][0],
                "CustomerId": None,
                "Status": g.pick(["open", "won", "lost"]),
                "Stage": None,
                "Amount": f"{g.rng.randrange(0, 100000)}.{g.rng.randrange(0, 100):02d}",
                "Currency": "NOK",
                "CloseDate": "2026-10-01",
                "Description": None,
                "ExternalRefs": {},
            }
        )
    crm.insert_many("orders", crm_rows("orders", orders))

    crm_products = []
    for index in g.rng.sample(range(size), min(matched, size)):
        keap_doc = products[index]
        crm_products.append(
            {
                "Name": keap_doc["name"],
                "Sku": keap_doc["sku"],
                "Description": None,
                "ShortDescription": keap_doc["short_description"],
                "Price": f"{keap_doc['price'] // 100}.{keap_doc['price'] % 100:02d}",
                "Currency": "USD",
                "Active": True,
                "ExternalRefs": {},
            }
        )
    for i in range(own):
        crm_products.append(
            {
                "Name": f"Customcrm-only product {i + 1}",
                "Sku": f"CC-{i + 1:05d}",
                "Description": None,
                "ShortDescription": None,
                "Price": "99.00",
                "Currency": "NOK",
                "Active": True,
                "ExternalRefs": {},
            }
        )
    crm.insert_many("products", crm_rows("products", crm_products))

    return DemoSummary(
        size=size,
        seed=seed,
        keap={r: keap.count(r) for r in ("companies", "contacts", "opportunities", "products")},
        customcrm={r: c["live"] for r, c in crm.counts().items()},
    )


def _customer(name: str, email: str | None, g: _Gen, org: bool) -> dict[str, Any]:
    city, country, _ = g.pick(PLACES)
    return {
        "Name": name,
        "Description": None,
        "Website": None,
        "Email": email,
        "Phone": g.phone(country) if g.chance(0.5) else None,
        "Fax": None,
        "StreetAddress1": None,
        "StreetAddress2": None,
        "City": city if g.chance(0.5) else None,
        "ZipCode": None,
        "Country": None,
        "OrgNumber": f"{g.rng.randrange(800_000_000, 999_999_999)}" if org else None,
        "ExternalRefs": {},
    }
