-- Media keeps the name its uploader gave the file.
ALTER TABLE media ADD COLUMN filename text;
