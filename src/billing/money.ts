/** Amounts as the billing module writes them for people, in German notation like the invoices: "1.234,56 €". */

/** 123456 cents as "1.234,56 €", in integers. */
export const formatEuro = (cents: number): string => {
  const sign = cents < 0 ? "-" : ""
  const abs = Math.abs(cents)
  const euros = String(Math.floor(abs / 100)).replace(/\B(?=(\d{3})+(?!\d))/g, ".")
  return `${sign}${euros},${String(abs % 100).padStart(2, "0")} €`
}
