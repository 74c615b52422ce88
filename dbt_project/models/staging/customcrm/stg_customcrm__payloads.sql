-- Each Customcrm record as Customcrm sent it, where it is read as it came (review_unparseable_values shows it).
-- A view over the raw tables: the staging tables of records keep no copy of a payload.
-- JSON text: a reader casts it after its join, so only the records it reads are parsed.
{{ payloads_view('customcrm') }}
