/**
 * A realistic, reproducible demo organization: a municipal utility with a few
 * hundred customers (German names, valid IBANs at real German banks, signed
 * SEPA mandates) and contracts at 19 % and 7 % VAT, arranged around one
 * billing period so that every case of a billing run shows up: full months,
 * contracts ending or starting mid-month, contracts not yet started, contracts
 * already ended. Same options, same data (a seeded pseudo-random generator).
 */
import { addDays, dayNumber, fromDayNumber, type Period } from "./calendar.js"
import type { NewContract, NewCustomer, NewOrganization } from "./domain.js"
import { makeIban } from "./iban.js"
import { seededRandom } from "./seededRandom.js"

export const DEMO_ORGANIZATION_ID = "d3e0d3e0-0000-4000-8000-000000000001"

const FIRST_NAMES = [
  "Anna", "Lena", "Marie", "Sophie", "Laura", "Julia", "Hannah", "Lea", "Katharina", "Sabine", "Petra", "Monika",
  "Ursula", "Claudia", "Birgit", "Jana", "Leonie", "Emma", "Mia", "Charlotte", "Lukas", "Jonas", "Leon", "Felix",
  "Maximilian", "Paul", "Tim", "Jan", "Niklas", "Thomas", "Michael", "Andreas", "Stefan", "Frank", "Jürgen",
  "Klaus", "Wolfgang", "Matthias", "Sebastian", "Tobias", "Florian", "Moritz", "Jörg", "Günter", "Dieter", "Björn"
]

const LAST_NAMES = [
  "Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
  "Schäfer", "Koch", "Bauer", "Richter", "Klein", "Wolf", "Schröder", "Neumann", "Schwarz", "Zimmermann",
  "Braun", "Krüger", "Hofmann", "Hartmann", "Lange", "Schmitt", "Werner", "Schmitz", "Krause", "Meier",
  "Lehmann", "Schmid", "Schulze", "Maier", "Köhler", "Herrmann", "König", "Walter", "Mayer", "Huber",
  "Kaiser", "Fuchs", "Peters", "Lang", "Scholz", "Möller", "Weiß", "Jung", "Hahn", "Vogel", "Friedrich", "Günther"
]

const BUSINESSES = ["Bäckerei", "Metzgerei", "Blumenhaus", "Zahnarztpraxis Dr.", "Steuerkanzlei", "Friseursalon", "Autohaus", "Apotheke am Markt –"]

// Real German bank codes (BLZ) with their BICs.
const BANKS: ReadonlyArray<readonly [blz: string, bic: string]> = [
  ["10070000", "DEUTDEBBXXX"], ["10040000", "COBADEFFXXX"], ["10050000", "BELADEBEXXX"], ["50010517", "INGDDEFFXXX"],
  ["43060967", "GENODEM1GLS"], ["70150000", "SSKMDEMMXXX"], ["20050550", "HASPDEHHXXX"], ["12030000", "BYLADEM1001"]
]

// What the utility sells: VAT 19 % for energy and telecoms, 7 % for drinking water and the town magazine.
const MAIN_PRODUCTS = [
  { description: "Ökostrom Abschlag", monthlyNetCents: 8733, vatRateBp: 1900 },
  { description: "Erdgas Abschlag", monthlyNetCents: 6417, vatRateBp: 1900 },
  { description: "Glasfaser 250 Mbit/s", monthlyNetCents: 3353, vatRateBp: 1900 },
  { description: "Glasfaser 1 Gbit/s", monthlyNetCents: 5873, vatRateBp: 1900 }
] as const
const EXTRA_PRODUCTS = [
  { description: "Telefon-Flatrate", monthlyNetCents: 835, vatRateBp: 1900 },
  { description: "Smart-Home-Paket", monthlyNetCents: 419, vatRateBp: 1900 },
  { description: "Stadtmagazin Abo", monthlyNetCents: 423, vatRateBp: 700 }
] as const
const WATER = { description: "Trinkwasser Grundpreis", monthlyNetCents: 1385, vatRateBp: 700 } as const

const transliterate = (text: string) =>
  text.toLowerCase().replace(/ä/g, "ae").replace(/ö/g, "oe").replace(/ü/g, "ue").replace(/ß/g, "ss").replace(/[^a-z0-9]+/g, ".").replace(/^\.|\.$/g, "")

export interface DemoData {
  readonly organization: NewOrganization
  /** Encoded form: decode with the domain Schemas before storing. */
  readonly customers: ReadonlyArray<typeof NewCustomer.Encoded>
  readonly contracts: ReadonlyArray<typeof NewContract.Encoded>
  /** How the contracts relate to the period. */
  readonly mix: {
    readonly endingInPeriod: number
    readonly startingInPeriod: number
    readonly notYetStarted: number
    readonly endedBefore: number
    readonly reducedVat: number
  }
}

export interface DemoDataOptions {
  readonly organizationId: string
  readonly name: string
  readonly customers: number
  readonly period: Period
  readonly seed: number
}

export const demoData = (options: DemoDataOptions): DemoData => {
  const random = seededRandom(options.seed)
  const { period } = options
  const periodStart = dayNumber(period.start)
  const customers: Array<typeof NewCustomer.Encoded> = []
  const contracts: Array<typeof NewContract.Encoded> = []
  const dayInPeriod = () => addDays(period.start, random.int(1, period.days - 2))

  for (let i = 0; i < options.customers; i++) {
    const customerNumber = `K-${String(10001 + i).padStart(6, "0")}`
    const first = random.pick(FIRST_NAMES)
    const last = random.pick(LAST_NAMES)
    const name = random.chance(0.1) ? `${random.pick(BUSINESSES)} ${last}` : `${first} ${last}`
    const [blz, bic] = random.pick(BANKS)
    const account = String(random.int(1, 9_999_999_999)).padStart(10, "0")
    // 1-5: signed but starting after the period; 6-8: left before it; 9-20: leaving during it;
    // 21-28: joining during it; the rest: billed for the whole month.
    const kind = random.int(1, 100)
    const since = kind <= 5
      ? addDays(period.end, random.int(1, 45))
      : kind >= 21 && kind <= 28
      ? dayInPeriod()
      : fromDayNumber(periodStart - random.int(30, 1800))
    const signedBefore = since < period.start ? since : period.start
    customers.push({
      customerNumber,
      name,
      email: `${transliterate(name)}.${i + 1}@example.de`,
      iban: makeIban("DE", blz + account),
      ...(random.chance(0.7) ? { bic } : {}),
      mandateReference: `SWM-${customerNumber}`,
      mandateSignedOn: addDays(signedBefore, -random.int(3, 20))
    })

    const contract = (product: { description: string; monthlyNetCents: number; vatRateBp: number }, startsOn: string, endsOn?: string) => {
      contracts.push({ customerNumber, ...product, startsOn, ...(endsOn !== undefined ? { endsOn } : {}) })
    }

    if (kind <= 5) {
      contract(random.pick(MAIN_PRODUCTS), since)
      continue
    }
    if (kind <= 8) {
      contract(random.pick(MAIN_PRODUCTS), since, addDays(period.start, -random.int(1, 25)))
      continue
    }
    contract(random.pick(MAIN_PRODUCTS), since, kind <= 20 ? dayInPeriod() : undefined)
    if (random.chance(0.35)) contract(WATER, since)
    if (random.chance(0.25)) {
      const extra = random.pick(EXTRA_PRODUCTS)
      const when = random.int(1, 10)
      if (when === 1) {
        const start = dayInPeriod()
        contract(extra, start < since ? since : start)
      } else if (when === 2) {
        const end = dayInPeriod()
        contract(extra, since, end < since ? since : end)
      } else if (when === 3) {
        contract(extra, addDays(period.end, random.int(1, 20)))
      } else {
        contract(extra, since)
      }
    }
  }

  return {
    organization: {
      id: options.organizationId,
      name: options.name,
      paymentTermsDays: 14,
      invoiceNumberPrefix: "SWM",
      // The Bundesbank's published test creditor id.
      sepaCreditorId: "DE98ZZZ09999999999"
    },
    customers,
    contracts,
    mix: mixOf(contracts, period)
  }
}

/** Counted from the contracts as made, so the summary matches what is stored. */
const mixOf = (contracts: ReadonlyArray<typeof NewContract.Encoded>, period: Period): DemoData["mix"] => {
  const mix = { endingInPeriod: 0, startingInPeriod: 0, notYetStarted: 0, endedBefore: 0, reducedVat: 0 }
  // ISO dates compare as strings. A contract from the 1st or to the last day covers the whole month.
  for (const { startsOn, endsOn, vatRateBp } of contracts) {
    if (vatRateBp === 700) mix.reducedVat++
    if (startsOn > period.end) mix.notYetStarted++
    else if (endsOn !== undefined && endsOn < period.start) mix.endedBefore++
    else {
      if (startsOn > period.start) mix.startingInPeriod++
      if (endsOn !== undefined && endsOn < period.end) mix.endingInPeriod++
    }
  }
  return mix
}
